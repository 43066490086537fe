"""Prepare a mesh in the TripoSR world frame for the files a viewer loads (docs/facts.md).

Every file format takes the same prepared mesh, so they all agree on:

* **Axes.** TripoSR's frame is Z up with the photographed front towards +X and image-right
  towards +Y (docs/architecture.md). glTF, and AR viewers with it, are Y up with the front towards
  +Z, so ``(x, y, z) → (y, z, x)``: front +X → +Z, right +Y → +X, up +Z → +Y. A cyclic permutation
  is a proper rotation, so the triangle winding (counter-clockwise seen from outside) is unchanged.
* **Placement.** The object is centred on its bounding box in x and z and stands on y = 0, the
  origin model-viewer and AR viewers expect for a product.
* **Units.** Metres. A single photo carries no scale and TripoSR normalises every object to about
  1.5 units, so by default one TripoSR unit becomes one metre; ``max_extent_m`` scales the largest
  side to a known real size.
* **Triangle budget.** ``target_faces`` decimates with quadric error metrics
  (``fast-simplification``, the library trimesh's own decimation wraps); the simplifier moves
  vertices, so each new vertex takes the colour of the nearest original vertex.
* **Normals.** Unit vertex normals for every vertex; zero-area triangles (marching cubes emits some)
  and the vertices only they use are dropped, because such a vertex has no normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from fast_simplification import simplify
from scipy.spatial import cKDTree

from img2mesh.errors import EmptyMesh

#: Vertex normals shorter than this (a vertex whose faces cancel out) get +Y instead: glTF
#: requires unit-length normals and the Khronos validator fails the file otherwise.
_MIN_NORMAL_LENGTH = 1e-6


@dataclass(frozen=True)
class PreparedMesh:
    """A mesh in the glTF frame (Y up, front +Z, metres, standing on y = 0).

    ``positions`` float64 [V, 3], ``triangles`` int64 [F, 3] counter-clockwise seen from outside,
    ``colors`` uint8 sRGB [V, 3] (the network's colours, as the photo shows them), ``normals``
    float64 [V, 3] of unit length.
    """

    positions: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    normals: np.ndarray


def prepare_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray,
    *,
    target_faces: int | None = None,
    max_extent_m: float | None = None,
) -> PreparedMesh:
    """Turn a TripoSR-frame mesh (FP32 ``[V,3]``, INT32 ``[F,3]``, UINT8 RGB ``[V,3]``) into a prepared one.

    Args:
        target_faces: decimate to about this many triangles when the mesh has more.
        max_extent_m: scale so that the largest bounding-box side is this many metres; None keeps
            one TripoSR unit as one metre.

    Raises:
        ValueError: arrays of the wrong shape, non-finite coordinates, out-of-range face indices.
        EmptyMesh: no triangle with a non-zero area is left.
    """
    positions, triangles, colors = _checked_arrays(vertices, faces, vertex_colors)
    positions = positions[:, [1, 2, 0]]
    if target_faces is not None and len(triangles) > target_faces:
        positions, triangles, colors = _decimate(positions, triangles, colors, target_faces)
    positions, triangles, colors = _drop_degenerate(positions, triangles, colors)
    positions = _place(positions, max_extent_m)
    normals = trimesh.Trimesh(positions, triangles, process=False, validate=False).vertex_normals
    return PreparedMesh(positions, triangles, colors, _unit_normals(normals))


def _checked_arrays(
    vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(faces, dtype=np.int64)
    colors = np.asarray(vertex_colors)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {positions.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {triangles.shape}")
    if colors.shape != positions.shape or colors.dtype != np.uint8:
        raise ValueError(f"vertex_colors must be uint8 [V, 3] like vertices, got {colors.dtype} {colors.shape}")
    if not np.isfinite(positions).all():
        raise ValueError("vertices contain NaN or infinite coordinates")
    if len(triangles) and (triangles.min() < 0 or triangles.max() >= len(positions)):
        raise ValueError(f"faces index vertices outside 0…{len(positions) - 1}")
    return positions, triangles, colors


def _decimate(
    positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray, target_faces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target_faces``; colours from the nearest original vertex."""
    new_positions, new_triangles = simplify(positions, triangles.astype(np.int32), target_count=target_faces)
    _, nearest = cKDTree(positions).query(new_positions)
    return new_positions, new_triangles.astype(np.int64), colors[nearest]


def _drop_degenerate(
    positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove zero-area triangles and vertices no triangle uses."""
    corners = positions[triangles]
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    triangles = triangles[doubled_area > 0]
    if len(triangles) == 0:
        raise EmptyMesh("the mesh has no triangles with a non-zero area, so there is no model to write")
    used, remapped = np.unique(triangles, return_inverse=True)
    return positions[used], remapped.reshape(-1, 3), colors[used]


def _place(positions: np.ndarray, max_extent_m: float | None) -> np.ndarray:
    """Centre on x/z, put the lowest point on y = 0, and optionally scale to a real size."""
    low, high = positions.min(axis=0), positions.max(axis=0)
    if max_extent_m is not None:
        if not max_extent_m > 0:
            raise ValueError(f"max_extent_m must be positive, got {max_extent_m}")
        scale = max_extent_m / float((high - low).max())
    else:
        scale = 1.0
    offset = np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
    return (positions - offset) * scale


def _unit_normals(normals: np.ndarray) -> np.ndarray:
    normals = np.array(normals, dtype=np.float64)
    lengths = np.linalg.norm(normals, axis=1)
    normals[lengths < _MIN_NORMAL_LENGTH] = (0.0, 1.0, 0.0)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)
