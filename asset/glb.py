"""Write a mesh in the TripoSR world frame as a GLB that web viewers and Shopify show correctly.

This is the only place that knows glTF's conventions (and the only module of ``img2mesh`` that
imports trimesh):

* **Axes.** TripoSR's frame is Z up with the photographed front towards +X and image-right
  towards +Y (docs/architecture.md). glTF is Y up with the front towards +Z, so
  ``(x, y, z) → (y, z, x)``: front +X → +Z, right +Y → +X, up +Z → +Y. A cyclic permutation is a
  proper rotation, so the triangle winding (counter-clockwise seen from outside) is unchanged.
* **Placement.** The object is centred on its bounding box in x and z and stands on y = 0, the
  origin model-viewer and AR viewers expect for a product.
* **Units.** glTF units are metres. A single photo carries no scale and TripoSR normalises every
  object to about 1.5 units, so by default one TripoSR unit becomes one metre; pass
  ``max_extent_m`` when the real size is known and the largest side is scaled to it.
* **Colour.** The network's colours are sRGB values (they reproduce the photo's pixels), while
  glTF's ``COLOR_0`` is a *linear* multiplier of the base colour, so they are converted to
  linear. The material is explicit: metallic 0, roughness 1, double-sided false. Without one,
  viewers use glTF's default material, metallic 1, which renders vertex colours dark.
* **Triangle budget.** ``target_faces`` decimates with quadric error metrics
  (``fast-simplification``, the library trimesh's own decimation wraps); the simplifier moves
  vertices, so each new vertex takes the colour of the nearest original vertex.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import trimesh
from fast_simplification import simplify
from scipy.spatial import cKDTree

from img2mesh.errors import EmptyMesh

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A

#: Vertex normals shorter than this (a vertex whose faces cancel out) get +Y instead: glTF
#: requires unit-length normals and the Khronos validator fails the file otherwise.
_MIN_NORMAL_LENGTH = 1e-6


def mesh_to_glb(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray,
    *,
    target_faces: int | None = None,
    max_extent_m: float | None = None,
) -> bytes:
    """Convert a TripoSR-frame mesh (FP32 ``[V,3]``, INT32 ``[F,3]``, UINT8 RGB ``[V,3]``) to GLB.

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

    rgba = np.empty((len(colors), 4), dtype=np.uint8)
    rgba[:, :3] = _srgb_to_linear_u8(colors)
    rgba[:, 3] = 255
    material = trimesh.visual.material.PBRMaterial(
        name="vertex_color",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )
    visual = trimesh.visual.TextureVisuals(material=material)
    visual.vertex_attributes["color"] = rgba
    mesh = trimesh.Trimesh(positions, triangles, visual=visual, process=False, validate=False)
    mesh.vertex_normals = _unit_normals(mesh.vertex_normals)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name="product", node_name="product")
    return scene.export(file_type="glb", include_normals=True)


def glb_summary(data: bytes) -> dict:
    """Counts and bounds read from a GLB's JSON chunk, for job metadata and tests.

    Returns ``{"bytes", "vertex_count", "face_count", "bounds_min", "bounds_max",
    "has_colors", "has_normals"}``, summed over all triangle primitives.
    """
    document = read_glb_json(data)
    accessors = document.get("accessors", [])
    vertex_count = face_count = 0
    has_colors = has_normals = True
    bounds_min = np.full(3, np.inf)
    bounds_max = np.full(3, -np.inf)
    for mesh in document.get("meshes", []):
        for primitive in mesh["primitives"]:
            attributes = primitive["attributes"]
            position = accessors[attributes["POSITION"]]
            vertex_count += position["count"]
            bounds_min = np.minimum(bounds_min, position["min"])
            bounds_max = np.maximum(bounds_max, position["max"])
            face_count += accessors[primitive["indices"]]["count"] // 3
            has_colors &= "COLOR_0" in attributes
            has_normals &= "NORMAL" in attributes
    return {
        "bytes": len(data),
        "vertex_count": vertex_count,
        "face_count": face_count,
        "bounds_min": bounds_min.tolist(),
        "bounds_max": bounds_max.tolist(),
        "has_colors": has_colors,
        "has_normals": has_normals,
    }


def read_glb_json(data: bytes) -> dict:
    """The glTF JSON document of a GLB (12-byte header, then the JSON chunk)."""
    if len(data) < 20 or data[:4] != _GLB_MAGIC:
        raise ValueError("not a GLB file: the header does not start with 'glTF'")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if version != 2 or length != len(data) or chunk_type != _JSON_CHUNK:
        raise ValueError(f"malformed GLB header (version {version}, length {length} of {len(data)})")
    return json.loads(data[20 : 20 + chunk_length])


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
    """Remove zero-area triangles (marching cubes emits some) and vertices no triangle uses.

    A vertex used only by zero-area triangles has no normal, which glTF does not allow.
    """
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


def _srgb_to_linear_u8(colors: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), rounded back to 8 bits."""
    srgb = colors.astype(np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return np.round(linear * 255.0).astype(np.uint8)


def _unit_normals(normals: np.ndarray) -> np.ndarray:
    normals = np.array(normals, dtype=np.float64)
    lengths = np.linalg.norm(normals, axis=1)
    normals[lengths < _MIN_NORMAL_LENGTH] = (0.0, 1.0, 0.0)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)
