"""Tiny checkpoints in the official file format, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from triposr.checkpoint import load_tsr
from triposr.synthetic import write_checkpoint
from triposr.system import TSR

ANALYTIC_RADIUS = 0.5
ANALYTIC_COLOR = (0.8, 0.3, 0.2)


@pytest.fixture(scope="session")
def tiny_random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny_random"), size="tiny", kind="random", seed=0)


@pytest.fixture(scope="session")
def tiny_random(tiny_random_dir: Path) -> TSR:
    return load_tsr(tiny_random_dir)


@pytest.fixture(scope="session")
def tiny_analytic(tmp_path_factory: pytest.TempPathFactory) -> TSR:
    directory = write_checkpoint(
        tmp_path_factory.mktemp("tiny_analytic"), size="tiny", kind="analytic", radius=ANALYTIC_RADIUS, color=ANALYTIC_COLOR
    )
    return load_tsr(directory)
