"""The narrow-band extraction against the dense grid: the same mesh from a fraction of the points.

Analytic fields with known surfaces: a ball (the bench's analytic TripoSR field), a plate thinner
than the coarse lattice's spacing, a ball cut by the grid's boundary, no surface at all, and a
threshold at the very edge of the density range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from img2mesh import mesh_extraction
from img2mesh.errors import EmptyMesh
from img2mesh.mesh_extraction import DEFAULT_RADIUS, extract_surface

Field = Callable[[np.ndarray], np.ndarray]


def ball(center: tuple[float, float, float] = (0.0, 0.0, 0.0), radius: float = 0.5) -> Field:
    """The analytic TripoSR field's shape: density 25·exp(10·(r² − s)), s the squared distance."""
    def density(points: np.ndarray) -> np.ndarray:
        squared = np.sum((points - np.array(center)) ** 2, axis=1)
        return (25.0 * np.exp(10.0 * (radius**2 - squared))).astype(np.float32)

    return density


def thin_plate(resolution: int, thickness_cells: float, slope: float) -> Field:
    """A square plate ``thickness_cells`` grid cells thick, halfway between two coarse lattice
    planes (so that no coarse point lies inside it), whose raw density changes by ``slope`` per
    unit of length (the analytic ball's changes by at most 10)."""
    cell = 2 * DEFAULT_RADIUS / (resolution - 1)
    coarse = mesh_extraction.BAND_STRIDES[0] * cell
    middle = -DEFAULT_RADIUS + 5.5 * coarse
    half = thickness_cells * cell / 2

    def density(points: np.ndarray) -> np.ndarray:
        across = half - np.abs(points[:, 2] - middle)
        inside_square = 0.3 - np.maximum(np.abs(points[:, 0]), np.abs(points[:, 1]))
        return (25.0 * np.exp(slope * np.minimum(across, inside_square))).astype(np.float32)

    return density


class Counting:
    """A field that remembers how many points it was asked for, and refuses to be asked twice."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.asked: set[bytes] = set()

    def __call__(self, points: np.ndarray) -> np.ndarray:
        keys = {row.tobytes() for row in points}
        assert not keys & self.asked, "a grid point was evaluated twice"
        self.asked |= keys
        return self.field(points)


def assert_same_mesh(band: mesh_extraction.Surface, dense: mesh_extraction.Surface) -> None:
    assert len(band.faces) == len(dense.faces) > 0
    diagonal = float(np.linalg.norm(dense.vertices.max(0) - dense.vertices.min(0)))
    distance = float(np.abs(band.vertices - dense.vertices).max())
    assert distance <= 1e-5 * diagonal
    np.testing.assert_array_equal(band.faces, dense.faces)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_band_gives_the_dense_mesh_of_a_ball_from_few_points(resolution: int) -> None:
    field = Counting(ball())
    band = extract_surface(field, resolution, 25.0)
    dense = extract_surface(ball(), resolution, 25.0, extraction="dense")
    assert_same_mesh(band, dense)
    assert band.points_evaluated == len(field.asked)
    share = band.points_evaluated / resolution**3
    print(f"\nball at {resolution}³: {len(band.faces)} faces, band evaluated {share:.2%} of the grid")
    if resolution == 256:
        assert share < 0.10, "at least 10× fewer decoder points than the dense grid"


def test_a_plate_thinner_than_the_coarse_spacing_is_found() -> None:
    resolution = 256
    plate = thin_plate(resolution, thickness_cells=2, slope=20)
    dense = extract_surface(plate, resolution, 25.0, extraction="dense")
    assert_same_mesh(extract_surface(plate, resolution, 25.0), dense)


def test_without_its_margins_the_band_would_miss_the_thin_plate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety margins are what find the plate: the test above could fail."""
    resolution = 256
    plate = thin_plate(resolution, thickness_cells=2, slope=20)
    monkeypatch.setattr(mesh_extraction, "BAND_MARGIN", 0.0)
    monkeypatch.setattr(mesh_extraction, "BAND_DILATION", 0)
    with pytest.raises(EmptyMesh):
        extract_surface(plate, resolution, 25.0)


def test_a_surface_cut_by_the_grid_boundary_is_cut_the_same_way() -> None:
    off_centre = ball(center=(0.7, 0.0, -0.6), radius=0.45)
    band = extract_surface(off_centre, 128, 25.0)
    dense = extract_surface(off_centre, 128, 25.0, extraction="dense")
    assert_same_mesh(band, dense)
    assert np.isclose(band.vertices[:, 0].max(), DEFAULT_RADIUS, atol=1e-6), "open where the grid ends"


@pytest.mark.parametrize("extraction", ["band", "dense"])
def test_no_surface_is_an_empty_mesh_naming_the_density_range(extraction: str) -> None:
    with pytest.raises(EmptyMesh, match=r"no surface found at threshold 25.0: the density ranges from 0.1 to 0.1"):
        extract_surface(lambda points: np.full(len(points), 0.1, np.float32), 64, 25.0, extraction=extraction)


@pytest.mark.parametrize("edge", ["max", "min"])
def test_a_threshold_at_the_edge_of_the_range_behaves_as_dense(edge: str) -> None:
    field = ball(radius=0.3)
    values = field(mesh_extraction.grid_points(64))
    threshold = float(values.max() if edge == "max" else values.min())
    results = {}
    for extraction in ("band", "dense"):
        try:
            surface = extract_surface(field, 64, threshold, extraction=extraction)
            results[extraction] = (len(surface.faces), surface.faces.tobytes())
        except EmptyMesh:
            results[extraction] = None
    assert results["band"] == results["dense"]


def test_an_unknown_extraction_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="extraction must be one of band, dense"):
        extract_surface(ball(), 32, 25.0, extraction="sparse")


@pytest.mark.parametrize("resolution", [97, 130, 131])
def test_lattices_ending_in_a_shorter_block_give_the_dense_mesh(resolution: int) -> None:
    """Grids whose last point is off the coarse lattices' stride, so that each level's last block is
    shorter, and a surface that the far ends of the grid cut through those blocks."""
    shape = ball(center=(0.6, -0.1, 0.65), radius=0.45)
    field = Counting(shape)
    band = extract_surface(field, resolution, 25.0)
    assert_same_mesh(band, extract_surface(shape, resolution, 25.0, extraction="dense"))
    assert band.points_evaluated == len(field.asked)
