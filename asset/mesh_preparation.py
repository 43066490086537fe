"""Prepare a mesh in the TripoSR world frame for the files a viewer loads (docs/facts.md).

Every file format takes the same prepared mesh, so they all agree on:

* **Axes.** TripoSR's frame is Z up with the photographed front towards +X and image-right
  towards +Y (docs/architecture.md). glTF, and AR viewers with it, are Y up with the front towards
  +Z, so ``(x, y, z) → (y, z, x)``: front +X → +Z, right +Y → +X, up +Z → +Y. A cyclic permutation
  is a proper rotation, so the triangle winding (counter-clockwise seen from outside) is unchanged.
* **Placement.** The object is centred on its bounding box in x and z and stands on y = 0, the
  origin model-viewer and AR viewers expect for a product.
* **Units.** Metres. A single photo carries no scale and TripoSR normalises every object to about
  1.5 units, so without a :class:`RealSize` one TripoSR unit becomes one metre; with one, the
  product's largest side or its height is scaled to that many metres (AR viewers show it that big).
* **Triangle budget.** Triton's mesher has decimated the mesh already (``img2mesh.texture_baking``,
  before it baked the texture and the vertex colours), so nothing is decimated here.
* **Texture.** A mesh may come with a baked colour texture: per-vertex ``uvs`` in glTF's
  convention ((0, 0) is the top-left corner of the image, u to the right, v down) and the sRGB
  image. Its vertices are never merged: the copies of a vertex along a UV seam share a position
  but not their UVs. Vertex colours stay alongside for callers that want them.
* **Normals.** Unit vertex normals for every vertex, computed over all triangles at a position, so
  the copies of a seam vertex get the same normal and the seam does not show in the shading;
  zero-area triangles (marching cubes emits some) and the vertices only they use are dropped,
  because such a vertex has no normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from asset.material import Material, TextureFormat
from asset.real_size import RealSize
from img2mesh.errors import EmptyMesh

GLTF_AXES = [1, 2, 0]
"""The TripoSR axis each glTF axis is, ``(x, y, z) → (y, z, x)``: the one home of the conversion."""

#: Vertex normals shorter than this (a vertex whose faces cancel out) get +Y instead: glTF
#: requires unit-length normals and the Khronos validator fails the file otherwise.
_MIN_NORMAL_LENGTH = 1e-6


@dataclass(frozen=True)
class PreparedMesh:
    """A mesh in the glTF frame (Y up, front +Z, metres, standing on y = 0).

    ``positions`` float64 [V, 3], ``triangles`` int64 [F, 3] counter-clockwise seen from outside,
    ``colors`` uint8 sRGB [V, 3] (the network's colours, as the photo shows them), ``normals``
    float64 [V, 3] of unit length. A textured mesh also has ``uvs`` float32 [V, 2] (glTF
    convention: (0, 0) is the image's top-left corner, v points down) and ``texture`` uint8 sRGB
    [H, W, 3]; both are None otherwise.

    The GLB and the USDZ embed the same texture file: :meth:`texture_file` encodes it once per
    texture format and hands both writers the same bytes.
    """

    positions: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    _texture_files: dict[TextureFormat, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def texture_file(self, material: Material) -> bytes:
        """The texture encoded as ``material`` stores it (``Material.encode_texture``), encoded once per format."""
        if self.texture is None:
            raise ValueError("the mesh has no texture to encode")
        if material.texture_format not in self._texture_files:
            self._texture_files[material.texture_format] = material.encode_texture(self.texture)
        return self._texture_files[material.texture_format]

    @property
    def textured(self) -> bool:
        return self.texture is not None

    @property
    def extent_m(self) -> np.ndarray:
        """Width (x), height (y) and depth (z) of the bounding box, in metres."""
        return self.positions.max(axis=0) - self.positions.min(axis=0)


def prepare_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray,
    *,
    uvs: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    size: RealSize | None = None,
) -> PreparedMesh:
    """Turn a TripoSR-frame mesh (FP32 ``[V,3]``, INT32 ``[F,3]``, UINT8 RGB ``[V,3]``) into a prepared one.

    Args:
        uvs, texture: a baked colour texture (both or neither): FP32 ``[V,2]`` in glTF's UV
            convention, within [0, 1], and UINT8 sRGB ``[H,W,3]``.
        size: scale so that this dimension is this many metres; None keeps one TripoSR unit as
            one metre.

    Raises:
        ValueError: arrays of the wrong shape, non-finite coordinates, out-of-range face indices
            or UVs, a texture without UVs or UVs without a texture.
        EmptyMesh: no triangle with a non-zero area is left.
    """
    positions, triangles, colors = _checked_arrays(vertices, faces, vertex_colors)
    texture_uvs, image = _checked_texture(uvs, texture, len(positions))
    positions = positions[:, GLTF_AXES]
    triangles, used = _drop_degenerate(positions, triangles)
    positions, colors = positions[used], colors[used]
    texture_uvs = texture_uvs[used] if texture_uvs is not None else None
    positions = _place(positions, size)
    return PreparedMesh(positions, triangles, colors, _seamless_normals(positions, triangles), texture_uvs, image)


def triposr_positions(positions: np.ndarray, world_low: np.ndarray, world_high: np.ndarray) -> np.ndarray:
    """Positions of a prepared mesh (glTF frame, placed, in metres) back in the TripoSR world frame.

    ``world_low`` and ``world_high`` are the corners of the TripoSR-frame box of the mesh it was
    prepared from: the axes go back by the inverse of ``GLTF_AXES``, the placement and the real size
    by mapping the box onto that one (one scale, as :func:`prepare_mesh` scales). Whatever a writer
    did to the positions besides (a mirror, a turn) stays in them, which is what a check of the
    written file wants to see.
    """
    triposr = np.asarray(positions, dtype=np.float64)[:, np.argsort(GLTF_AXES)]
    low, high = triposr.min(axis=0), triposr.max(axis=0)
    scale = float(np.max(np.asarray(world_high) - np.asarray(world_low)) / np.max(high - low))
    return (triposr - low) * scale + np.asarray(world_low, dtype=np.float64)


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


def _checked_texture(
    uvs: np.ndarray | None, texture: np.ndarray | None, vertex_count: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if uvs is None and texture is None:
        return None, None
    if uvs is None or texture is None:
        raise ValueError("uvs and texture come together: a texture needs UVs and UVs need a texture")
    texture_uvs = np.asarray(uvs, dtype=np.float32)
    image = np.ascontiguousarray(texture)
    if texture_uvs.shape != (vertex_count, 2):
        raise ValueError(f"uvs must have shape [V, 2] = [{vertex_count}, 2], got {texture_uvs.shape}")
    if not (np.isfinite(texture_uvs).all() and texture_uvs.min() >= 0.0 and texture_uvs.max() <= 1.0):
        raise ValueError("uvs must be finite and within [0, 1]")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"texture must be a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    return texture_uvs, image


def _drop_degenerate(positions: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The triangles with a non-zero area, re-indexed to the vertices they use, and those vertices."""
    corners = positions[triangles]
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    triangles = triangles[doubled_area > 0]
    if len(triangles) == 0:
        raise EmptyMesh("the mesh has no triangles with a non-zero area, so there is no model to write")
    # The used vertices in order and each one's new index: np.unique's result without its sort.
    is_used = np.bincount(triangles.reshape(-1), minlength=len(positions)) > 0
    used = np.flatnonzero(is_used)
    renumbered = np.cumsum(is_used) - 1
    return renumbered[triangles], used


def _place(positions: np.ndarray, size: RealSize | None) -> np.ndarray:
    """Centre on x/z, put the lowest point on y = 0, and optionally scale to a real size."""
    low, high = positions.min(axis=0), positions.max(axis=0)
    extent = high - low
    if size is None:
        scale = 1.0
    else:
        measured = float(extent.max() if size.dimension == "largest_side" else extent[1])
        scale = size.metres / measured
    offset = np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
    return (positions - offset) * scale


def _seamless_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals (trimesh's, angle-weighted), shared by all vertices at one position (UV seams)."""
    welded, position_index = _unique_rows(positions)
    normals = trimesh.Trimesh(welded, position_index[triangles], process=False, validate=False).vertex_normals
    normals = np.array(normals, dtype=np.float64)[position_index]
    lengths = np.linalg.norm(normals, axis=1)
    normals[lengths < _MIN_NORMAL_LENGTH] = (0.0, 1.0, 0.0)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _unique_rows(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(positions, axis=0, return_inverse=True)`` by one lexicographic sort of the columns
    (about a third of its time: it sorts the rows as one structured type)."""
    order = np.lexsort(positions.T[::-1])
    ordered = positions[order]
    first = np.ones(len(ordered), dtype=bool)
    np.any(ordered[1:] != ordered[:-1], axis=1, out=first[1:])
    inverse = np.empty(len(ordered), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse
