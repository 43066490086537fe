"""Bake the decoder's colour into a texture: decimate, unwrap, rasterise, query, pad.

Vertex colours smear once a mesh is decimated: a long triangle across a colour edge interpolates
between its corners' colours. A texture keeps the decoder's colour at every texel of the surface
instead, whatever the triangle budget, and it is what AR Quick Look shows (docs/facts.md,
"Product models for the web and AR"). The steps, all on the mesh in TripoSR's world frame:

1. **Decimate** to the triangle budget with quadric error metrics (``fast-simplification``).
2. **Unwrap** with xatlas into one square atlas. Charts are kept small (``CHART_BOUNDARY``): xatlas'
   time goes into flattening large charts, and small ones also pack tighter.
3. **Rasterise** every triangle into the atlas (Pillow draws the triangle's index into a 32-bit
   image), so each texel knows a triangle; its centre's barycentric coordinates give the surface
   point it shows. Pillow also fills texels the outline only touches, and a later triangle wins
   a shared texel: a centre outside the triangle it got is moved to the closest point of that
   triangle (less than a texel away in the atlas, on the same surface).
4. **Query** the decoder's colour at those points (the caller's ``color_at``).
5. **Pad**: every texel no triangle covers takes the colour of the nearest covered texel, so
   bilinear filtering and mipmaps never blend a chart with the empty space or another chart.

UVs follow glTF: ``(0, 0)`` is the top-left corner of the texture image, u to the right, v down;
texel (row, column) covers ``v·S ∈ [row, row + 1)``, ``u·S ∈ [column, column + 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xatlas
from fast_simplification import simplify
from PIL import Image, ImageDraw
from scipy.ndimage import distance_transform_edt

from img2mesh.mesh_extraction import colors_to_uint8

CHART_BOUNDARY = 0.5
"""Longest chart boundary, in TripoSR units (the object spans about 1.5): charts this small unwrap
in seconds at 60 000 triangles; the default, unbounded charts take several times longer."""
CHART_PADDING = 2
"""Texels xatlas keeps between charts; the padding step fills them with the chart's own colour."""

ColorField = Callable[[np.ndarray], np.ndarray]
"""World points FP32 [N, 3] → sRGB colour in [0, 1], FP32 [N, 3]."""


@dataclass(frozen=True)
class BakedMesh:
    """A decimated mesh with its UV atlas and baked texture (vertices split where charts meet)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target_faces`` triangles (a mesh with fewer is returned as it is)."""
    if len(faces) <= target_faces:
        return vertices, faces
    positions, triangles = simplify(
        np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int32), target_count=target_faces
    )
    return positions.astype(np.float32), triangles.astype(np.int32)


def unwrap(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas' atlas of the mesh: ``(original vertex of each new vertex, new faces, uvs in [0, 1])``.

    xatlas leaves faces whose area is below its epsilon out of every chart (their UVs stay at
    (0, 0), where they would show another chart's texel). Decimation leaves a few such slivers,
    far smaller than a texel; they are dropped, with the vertices only they used.
    """
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_boundary_length = CHART_BOUNDARY
    charts.max_iterations = 0
    packing = xatlas.PackOptions()
    packing.padding = CHART_PADDING
    packing.bilinear = True
    atlas.generate(charts, packing)
    mapping, new_faces, uvs = atlas[0]
    corners = uvs[new_faces].astype(np.float64)
    uv_area = np.abs(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))
    charted = new_faces[uv_area > 0]
    used, remapped = np.unique(charted, return_inverse=True)
    return mapping[used].astype(np.int64), remapped.reshape(-1, 3).astype(np.int32), uvs[used].astype(np.float32)


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """``INT32 [size, size]``: the face index each texel shows, −1 where no face covers it."""
    image = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(image)
    corners = (uvs[faces] * size).astype(np.float64)
    for index, triangle in enumerate(corners):
        draw.polygon([(x, y) for x, y in triangle], fill=index + 1)
    return np.asarray(image, dtype=np.int32) - 1


def texel_points(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The world point at the centre of every covered texel: ``(flat texel indices, points FP32 [N, 3])``.

    A centre outside its triangle is moved to the triangle's closest point first.
    """
    size = owners.shape[0]
    flat = np.flatnonzero(owners >= 0)
    rows, columns = np.divmod(flat, size)
    centres = np.stack([(columns + 0.5) / size, (rows + 0.5) / size], axis=1).astype(np.float64)
    triangle = faces[owners.reshape(-1)[flat]]
    corners = uvs[triangle].astype(np.float64)
    weights = _barycentric(centres, corners)
    outside = weights.min(axis=1) < 0
    weights[outside] = _barycentric(_closest_points(centres[outside], corners[outside]), corners[outside])
    weights = np.clip(weights, 0.0, 1.0)
    weights /= weights.sum(axis=1, keepdims=True)
    points = np.einsum("nk,nkd->nd", weights, vertices[triangle])
    return flat, points.astype(np.float32)


def _barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [N, 3] of 2D ``points`` in triangles ``corners`` [N, 3, 2] (thirds if flat)."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denominator = d00 * d11 - d01 * d01
    flat = np.abs(denominator) <= 1e-20
    safe = np.where(flat, 1.0, denominator)
    beta = np.where(flat, 1 / 3, (d11 * d20 - d01 * d21) / safe)
    gamma = np.where(flat, 1 / 3, (d00 * d21 - d01 * d20) / safe)
    return np.stack([1 - beta - gamma, beta, gamma], axis=1)


def _closest_points(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The closest point of each triangle's edges to each 2D point (for points outside their triangle)."""
    best = np.empty_like(points)
    best_distance = np.full(len(points), np.inf)
    for start, end in ((0, 1), (1, 2), (2, 0)):
        a, b = corners[:, start], corners[:, end]
        edge = b - a
        length = np.maximum((edge * edge).sum(1), 1e-30)
        t = np.clip(((points - a) * edge).sum(1) / length, 0.0, 1.0)
        candidate = a + t[:, None] * edge
        distance = ((candidate - points) ** 2).sum(1)
        nearer = distance < best_distance
        best[nearer], best_distance[nearer] = candidate[nearer], distance[nearer]
    return best


def pad(texture: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every texel outside ``covered`` takes the colour of the nearest covered texel."""
    _, (rows, columns) = distance_transform_edt(~covered, return_indices=True)
    return texture[rows, columns]


def bake(
    vertices: np.ndarray, faces: np.ndarray, color_at: ColorField, *, target_faces: int, texture_size: int
) -> BakedMesh:
    """The mesh decimated to ``target_faces``, unwrapped, and its colour baked into a ``texture_size``² texture."""
    positions, triangles = decimate(vertices, faces, target_faces)
    mapping, atlas_faces, uvs = unwrap(positions, triangles)
    atlas_vertices = positions[mapping]
    owners = rasterize(uvs, atlas_faces, texture_size)
    flat, points = texel_points(atlas_vertices, atlas_faces, uvs, owners)
    texture = np.zeros((texture_size * texture_size, 3), dtype=np.uint8)
    texture[flat] = colors_to_uint8(color_at(points))
    texture = pad(texture.reshape(texture_size, texture_size, 3), owners >= 0)
    return BakedMesh(atlas_vertices.astype(np.float32), atlas_faces, uvs, np.ascontiguousarray(texture))

