"""Marching cubes on dense analytic grids: grid layout, sphere accuracy, closure, winding."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from img2mesh.errors import EmptyMesh, InvalidInput
from img2mesh.mesh_extraction import colors_to_uint8, grid_points, iter_chunks, marching_cubes


def test_grid_layout_is_ij_c_order_over_the_full_radius() -> None:
    resolution = 5
    points = grid_points(resolution, radius=0.87)
    assert points.shape == (125, 3) and points.dtype == np.float32
    axis = np.linspace(-0.87, 0.87, resolution, dtype=np.float32)
    i, j, k = 1, 3, 4
    np.testing.assert_allclose(points[i * 25 + j * 5 + k], [axis[i], axis[j], axis[k]], atol=1e-7)
    np.testing.assert_allclose(points[0], [-0.87] * 3, atol=1e-7)
    np.testing.assert_allclose(points[-1], [0.87] * 3, atol=1e-7)


def sphere_density(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Activated density that crosses 25 on the sphere, like exp(raw − 1) from the decoder."""
    return (25.0 * np.exp(8.0 * (radius - np.linalg.norm(points - center, axis=1)))).astype(np.float32)


def test_sphere_is_accurate_closed_and_outward() -> None:
    resolution, center, radius = 96, np.array([0.1, -0.2, 0.05]), 0.5
    density = sphere_density(grid_points(resolution), center, radius)
    vertices, faces = marching_cubes(density, resolution, threshold=25.0)
    assert vertices.dtype == np.float32 and faces.dtype == np.int32
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    measured_radius = np.linalg.norm(vertices - center, axis=1).mean()
    print(f"sphere: radius {measured_radius:.5f} (true {radius}), volume {mesh.volume:.5f} (true {4 / 3 * np.pi * radius**3:.5f})")
    assert abs(measured_radius - radius) < 0.01 * radius
    assert mesh.is_watertight
    assert mesh.volume > 0  # counter-clockwise seen from outside
    np.testing.assert_allclose(vertices.mean(axis=0), center, atol=0.01)


def test_axes_are_not_swapped() -> None:
    # An ellipsoid long along x, short along z: the torchmcubes [2, 1, 0] swap would mirror it.
    resolution = 64
    points = grid_points(resolution)
    semi_axes = np.array([0.6, 0.3, 0.15])
    density = 25.0 * np.exp(4.0 * (1.0 - np.linalg.norm(points / semi_axes, axis=1)))
    vertices, _ = marching_cubes(density.reshape(resolution, resolution, resolution), resolution, 25.0)
    np.testing.assert_allclose(vertices.max(axis=0), semi_axes, rtol=0.05)


@pytest.mark.parametrize("level", [0.0, 100.0])
def test_no_surface_raises_empty_mesh(level: float) -> None:
    with pytest.raises(EmptyMesh, match="no surface found at threshold 25.0") as raised:
        marching_cubes(np.full(16**3, level, dtype=np.float32), 16, 25.0)
    assert isinstance(raised.value, InvalidInput)


def test_density_of_the_wrong_size_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="expected resolution³ = 4096"):
        marching_cubes(np.zeros(100, dtype=np.float32), 16, 25.0)


def test_colors_round_like_trimesh() -> None:
    colors = np.array([[0.0, 0.5, 1.0], [-0.2, 0.998, 1.3], [0.0019, 0.0020, 0.3 / 255]], dtype=np.float32)
    np.testing.assert_array_equal(colors_to_uint8(colors), [[0, 128, 255], [0, 254, 255], [0, 1, 0]])


def test_iter_chunks_covers_every_point_once() -> None:
    points = grid_points(21)
    chunks = list(iter_chunks(points, 8192))
    assert [len(chunk) for chunk in chunks] == [8192, 21**3 - 8192]
    np.testing.assert_array_equal(np.concatenate(chunks), points)
