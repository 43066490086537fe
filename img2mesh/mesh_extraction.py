"""TripoSR's mesh extraction without torch: the query grid, marching cubes, vertex colours.

The grid and the vertex mapping follow ``TSR.extract_mesh`` / ``MarchingCubeHelper`` exactly
(docs/facts.md, "TripoSR mesh extraction"). PyMCubes replaces torchmcubes: it reads the volume in
(x, y, z) axis order, so TripoSR's ``[2, 1, 0]`` vertex swap (a torchmcubes quirk) must not be
applied, and its triangles already wind counter-clockwise seen from outside for a positive-inside
field.
"""

from __future__ import annotations

from collections.abc import Iterator

import mcubes
import numpy as np

from img2mesh.errors import EmptyMesh

DEFAULT_RADIUS = 0.87
DEFAULT_CHUNK_SIZE = 8192


def grid_points(resolution: int, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """The ``FP32 [R³, 3]`` query points: ``linspace(0, 1, R)`` per axis mapped onto ``[−radius, radius]``.

    Flat index ``i·R² + j·R + k`` holds ``(x_i, y_j, z_k)`` (meshgrid "ij", C order), so the
    decoder's densities reshape straight into an ``(R, R, R)`` volume with axes (x, y, z).
    """
    axis = _axis_coordinates(resolution, radius)
    points = np.empty((resolution, resolution, resolution, 3), dtype=np.float32)
    points[..., 0] = axis[:, None, None]
    points[..., 1] = axis[None, :, None]
    points[..., 2] = axis[None, None, :]
    return points.reshape(-1, 3)


def grid_chunks(
    resolution: int, chunk_size: int = DEFAULT_CHUNK_SIZE, radius: float = DEFAULT_RADIUS
) -> Iterator[np.ndarray]:
    """:func:`grid_points` in consecutive chunks of ``chunk_size`` rows, built chunk by chunk.

    The whole grid is 393 MB at R = 320; the mesher and the reference only ever need one chunk.
    """
    axis = _axis_coordinates(resolution, radius)
    total = resolution**3
    for start in range(0, total, chunk_size):
        index = np.arange(start, min(start + chunk_size, total))
        i, rest = np.divmod(index, resolution * resolution)
        j, k = np.divmod(rest, resolution)
        yield np.stack([axis[i], axis[j], axis[k]], axis=1)


def iter_chunks(points: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[np.ndarray]:
    """Consecutive row slices (views) of ``points`` of at most ``chunk_size`` rows, for chunked decoding."""
    for start in range(0, len(points), chunk_size):
        yield points[start : start + chunk_size]


def marching_cubes(
    density: np.ndarray,
    resolution: int,
    threshold: float,
    radius: float = DEFAULT_RADIUS,
) -> tuple[np.ndarray, np.ndarray]:
    """The iso-surface ``density == threshold`` as ``(vertices FP32 [V, 3], faces INT32 [F, 3])``.

    ``density`` holds the activated densities (``exp(raw − 1)``) at :func:`grid_points`, flat
    ``[R³]`` or ``[R, R, R]``. The field ``density − threshold`` (positive inside, computed in
    float32 like TripoSR) is meshed at level 0, and vertex indices are mapped like the grid:
    ``index / (R − 1)`` onto ``[−radius, radius]``. Faces wind counter-clockwise seen from outside.

    Raises:
        EmptyMesh: the density never crosses the threshold, so there is no surface.
        ValueError: ``density`` does not hold ``resolution³`` values (a caller bug, not bad input).
    """
    if density.size != resolution**3:
        raise ValueError(f"density has {density.size} values, expected resolution³ = {resolution**3}")
    field = density.astype(np.float32, copy=False).reshape(resolution, resolution, resolution) - np.float32(threshold)
    vertices, faces = mcubes.marching_cubes(field, 0.0)
    if len(faces) == 0:
        raise EmptyMesh(
            f"no surface found at threshold {threshold}: the density ranges from {float(field.min()) + threshold:.4g} "
            f"to {float(field.max()) + threshold:.4g} over the grid; use a threshold inside that range (default 25.0) "
            "or send a photo with one clearly visible object"
        )
    world = vertices / (resolution - 1) * (2 * radius) - radius
    return world.astype(np.float32), faces.astype(np.int32)


def colors_to_uint8(color: np.ndarray) -> np.ndarray:
    """Decoder colours (sigmoid RGB, ``FP32 [V, 3]``) to uint8 as trimesh does: ``round(c·255)``, clipped."""
    return np.clip(np.round(color.astype(np.float32) * 255), 0, 255).astype(np.uint8)


def _axis_coordinates(resolution: int, radius: float) -> np.ndarray:
    """``linspace(0, 1, R)`` mapped onto ``[−radius, radius]``, both ends included."""
    return (np.linspace(0.0, 1.0, resolution) * (2 * radius) - radius).astype(np.float32)
