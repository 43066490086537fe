"""The Khronos glTF-Validator (npm ``gltf-validator``, run with node) as a test helper.

The validator is the reference implementation of the glTF 2.0 rules, so "0 errors" here is the
check that a GLB will load in every conforming viewer. It is installed once with npm into the
tests' npm cache (``tests.support.npm``).

Use the ``gltf_validator`` fixture (a :class:`GltfValidator`) or ``validate_glb`` directly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.npm import ensure_npm_package

VALIDATOR_PACKAGE = "gltf-validator"
VALIDATOR_VERSION = "2.0.0-dev.3.10"

# Reads the GLB from stdin and prints the validator's report as JSON. maxIssues 0 = no limit.
_RUNNER = """
const validator = require(process.argv[1]);
const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  validator.validateBytes(new Uint8Array(Buffer.concat(chunks)), {maxIssues: 0})
    .then((report) => process.stdout.write(JSON.stringify(report)))
    .catch((error) => { process.stderr.write(String(error)); process.exit(2); });
});
"""


def ensure_validator() -> Path:
    """Return the installed package folder, installing the pinned version with npm if needed."""
    return ensure_npm_package(VALIDATOR_PACKAGE, VALIDATOR_VERSION)


def validate_glb(glb: bytes | str | os.PathLike[str]) -> dict:
    """Validate a GLB (bytes or a path) and return the validator's report.

    The report's ``issues`` holds ``numErrors``, ``numWarnings`` and ``messages`` (each with
    ``code``, ``message``, ``severity`` 0 = error, and ``pointer``), and ``info`` holds counts
    such as ``totalVertexCount`` and ``totalTriangleCount``.
    """
    data = glb if isinstance(glb, bytes) else Path(glb).read_bytes()
    package = ensure_validator()
    completed = subprocess.run(
        ["node", "-e", _RUNNER, str(package)], input=data, capture_output=True, timeout=120
    )
    if completed.returncode != 0:
        raise RuntimeError(f"gltf-validator could not run: {completed.stderr.decode(errors='replace')}")
    return json.loads(completed.stdout)


def error_messages(report: dict) -> list[str]:
    """The report's errors as ``"CODE at /pointer: message"`` lines (empty when valid)."""
    return [
        f"{issue['code']} at {issue.get('pointer', '')}: {issue['message']}"
        for issue in report["issues"]["messages"]
        if issue["severity"] == 0
    ]


class GltfValidator:
    """Callable fixture object: ``gltf_validator(glb)`` returns the report, ``assert_valid`` asserts."""

    def __call__(self, glb: bytes | str | os.PathLike[str]) -> dict:
        return validate_glb(glb)

    def assert_valid(self, glb: bytes | str | os.PathLike[str]) -> dict:
        """Assert 0 errors and return the report (warnings and infos are allowed)."""
        report = validate_glb(glb)
        errors = error_messages(report)
        assert report["issues"]["numErrors"] == 0, "glTF validator errors:\n" + "\n".join(errors)
        return report


@pytest.fixture(scope="session")
def gltf_validator() -> GltfValidator:
    """A validator ready to use (installed into the npm cache on first use)."""
    ensure_validator()
    return GltfValidator()
