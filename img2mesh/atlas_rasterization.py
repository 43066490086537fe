"""Which triangle every texel of a UV atlas shows, and where on it: vectorised, no draw calls.

A texel shows the surface point under its centre: texel (row, column) has its centre at
``(column + ½, row + ½)`` in texel units (glTF's UVs times the texture size, v down). The atlas is
scan-converted in numpy for all triangles at once: for every triangle and every texel row its
bounding box crosses, the three edges bound the run of texel centres inside it, and the runs are
expanded into texels. This is the per-texel coverage Stable Fast 3D's baker computes on the GPU,
as a few array operations instead of one Pillow polygon per triangle, and only texels inside a
triangle are ever generated. A centre on an edge two triangles share counts for both (a hair of
tolerance, so that rounding loses none), and one of them keeps it.

A triangle too small or too thin to contain a texel centre (decimation leaves a few) still gets the
texel under its UV centroid when no other triangle claimed it, showing its centroid, so every
triangle's surface is in the texture.
"""

from __future__ import annotations

import numpy as np

EDGE_TOLERANCE = 1e-7
"""Texels by which a centre may lie outside an edge and still count as inside it (rounding)."""
STRICT_MARGIN = 1e-6
"""Texels by which a centre must lie inside every edge to count as strictly inside a triangle: two
triangles that both hold such a centre overlap in the atlas."""


def texel_pairs(uvs: np.ndarray, faces: np.ndarray, size: int, *, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(flat texel indices, triangle indices)`` of every texel centre inside a triangle of the ``size``² atlas.

    ``uvs`` are in [0, 1] (glTF's convention); ``strict`` keeps only centres at least
    ``STRICT_MARGIN`` inside every edge.
    """
    corners = uvs[faces].astype(np.float64) * size  # [F, 3, 2] in texel units
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    orientation = np.sign(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])
    # Edge k runs from corner k to corner k + 1; a point is inside when a·x + b·y + c ≥ 0 for all three.
    start, end = corners, np.roll(corners, -1, axis=1)
    a = -(end[..., 1] - start[..., 1]) * orientation[:, None]
    b = (end[..., 0] - start[..., 0]) * orientation[:, None]
    c = -(a * start[..., 0] + b * start[..., 1])
    top = np.clip(np.ceil(corners[..., 1].min(axis=1) - 0.5), 0, size).astype(np.int64)
    bottom = np.clip(np.floor(corners[..., 1].max(axis=1) - 0.5), -1, size - 1).astype(np.int64)
    rows = np.where(orientation != 0, np.maximum(bottom - top + 1, 0), 0)  # no area: no centre inside
    triangle = np.repeat(np.arange(len(faces)), rows)
    row = top[triangle] + np.arange(len(triangle)) - np.repeat(np.cumsum(rows) - rows, rows)
    # Along the row y = row + ½ each edge bounds x from one side (a > 0: from the left).
    a, reach = a[triangle], b[triangle] * (row[:, None] + 0.5) + c[triangle]
    margin = STRICT_MARGIN if strict else -EDGE_TOLERANCE
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -reach / a
    left = np.where(a > 0, bound, -np.inf).max(axis=1) + margin
    right = np.where(a < 0, bound, np.inf).min(axis=1) - margin
    level = np.where(a == 0, reach >= margin, True).all(axis=1)  # an edge along the row: which side
    first_column = np.clip(np.ceil(left - 0.5), 0, size).astype(np.int64)
    last_column = np.clip(np.floor(right - 0.5), -1, size - 1).astype(np.int64)
    runs = np.where(level, np.maximum(last_column - first_column + 1, 0), 0)
    run = np.repeat(np.arange(len(runs)), runs)
    column = first_column[run] + np.arange(len(run)) - np.repeat(np.cumsum(runs) - runs, runs)
    return row[run] * size + column, triangle[run]


def overlapping_triangles(uvs: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """The triangles that share a texel centre strictly inside both: overlaps in the atlas."""
    texels, triangles = texel_pairs(uvs, faces, size, strict=True)
    counts = np.bincount(texels, minlength=size * size)
    return np.unique(triangles[counts[texels] > 1])


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(owners INT32 [size, size], weights FP32 [size, size, 3])``: the triangle each texel shows
    (−1 where none) and the barycentric coordinates of the surface point it shows."""
    texels, triangles = texel_pairs(uvs, faces, size)
    owners = np.full(size * size, -1, dtype=np.int32)
    owners[texels] = triangles  # a texel on a shared edge: one of its triangles keeps it
    missed = np.ones(len(faces), dtype=bool)
    missed[triangles] = False
    centroids = (uvs[faces[missed]].astype(np.float64).mean(axis=1) * size).astype(np.int64)
    centroid_texels = np.clip(centroids[:, 1], 0, size - 1) * size + np.clip(centroids[:, 0], 0, size - 1)
    free = owners[centroid_texels] < 0
    owners[centroid_texels[free]] = np.flatnonzero(missed)[free]
    covered = np.flatnonzero(owners >= 0)
    rows, columns = np.divmod(covered, size)
    centres = np.stack([columns + 0.5, rows + 0.5], axis=1) / size
    weights = np.zeros((size * size, 3), dtype=np.float32)
    weights[covered] = barycentric(centres, uvs[faces[owners[covered]]].astype(np.float64))
    return owners.reshape(size, size), weights.reshape(size, size, 3)


def barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [N, 3] of 2D ``points`` in triangles ``corners`` [N, 3, 2], clipped to
    the triangle (a centre on an edge, or a centroid texel's centre, is up to a texel outside it;
    a triangle without area gives its centroid)."""
    origin = corners[:, 0]
    first, second, point = corners[:, 1] - origin, corners[:, 2] - origin, points - origin
    determinant = first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0]
    flat = determinant == 0
    inverse = 1.0 / np.where(flat, 1.0, determinant)
    beta = np.where(flat, 1 / 3, (point[:, 0] * second[:, 1] - point[:, 1] * second[:, 0]) * inverse)
    gamma = np.where(flat, 1 / 3, (point[:, 1] * first[:, 0] - point[:, 0] * first[:, 1]) * inverse)
    weights = np.clip(np.stack([1 - beta - gamma, beta, gamma], axis=1), 0.0, 1.0)
    return weights / weights.sum(axis=1, keepdims=True)
