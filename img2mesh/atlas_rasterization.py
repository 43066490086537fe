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


def texel_pairs(uvs: np.ndarray, faces: np.ndarray, size: int, *,
                strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(flat texel indices, triangle indices)`` of every texel centre inside a triangle of the ``size``² atlas.

    ``uvs`` are in [0, 1] (glTF's convention); ``strict`` keeps only centres at least
    ``STRICT_MARGIN`` inside every edge.
    """
    corners = uvs[faces].astype(np.float64) * size  # [F, 3, 2] in texel units
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    orientation = np.sign(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])
    top = np.clip(np.ceil(corners[..., 1].min(axis=1) - 0.5), 0, size).astype(np.int64)
    bottom = np.clip(np.floor(corners[..., 1].max(axis=1) - 0.5), -1, size - 1).astype(np.int64)
    rows = np.where(orientation != 0, np.maximum(bottom - top + 1, 0), 0)  # no area: no centre inside
    triangle = np.repeat(np.arange(len(faces)), rows)
    row = top[triangle] + np.arange(len(triangle)) - np.repeat(np.cumsum(rows) - rows, rows)
    y = row + 0.5
    # Along a row, each edge that is not horizontal bounds the inside from the left or the right at
    # x = slope·y + offset (horizontal edges lie on the rows' range, which the corners bound).
    left, right = np.full(len(row), -np.inf), np.full(len(row), np.inf)
    for start, end in ((0, 1), (1, 2), (2, 0)):
        dx, dy = corners[:, end, 0] - corners[:, start, 0], corners[:, end, 1] - corners[:, start, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(dy != 0, dx / dy, 0.0)
        offset = corners[:, start, 0] - slope * corners[:, start, 1]
        # A centre is inside when orientation · cross(edge, centre − start) ≥ 0; along a row that
        # is a bound on x, from the left where orientation · dy < 0 and from the right where > 0.
        bounds_left = (dy * orientation) < 0
        bounds_right = (dy * orientation) > 0
        bound = slope[triangle] * y + offset[triangle]
        np.maximum(left, np.where(bounds_left[triangle], bound, -np.inf), out=left)
        np.minimum(right, np.where(bounds_right[triangle], bound, np.inf), out=right)
    margin = STRICT_MARGIN if strict else -EDGE_TOLERANCE
    first_column = np.clip(np.ceil(left + margin - 0.5), 0, size).astype(np.int64)
    last_column = np.clip(np.floor(right - margin - 0.5), -1, size - 1).astype(np.int64)
    runs = np.maximum(last_column - first_column + 1, 0)
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
    weights = np.zeros((size * size, 3), dtype=np.float32)
    weights[covered] = _barycentric(uvs, faces, size, covered, owners[covered])
    return owners.reshape(size, size), weights.reshape(size, size, 3)


def _barycentric(uvs: np.ndarray, faces: np.ndarray, size: int, texels: np.ndarray,
                 triangles: np.ndarray) -> np.ndarray:
    """Barycentric coordinates FP32 [N, 3] of the ``texels``' centres in their ``triangles``, clipped into
    the triangle (a centre on an edge, or a centroid texel's centre, is up to a texel outside it; a
    triangle without area gives its centroid)."""
    corners = uvs[faces].astype(np.float64) * size
    origin = corners[:, 0]
    first, second = corners[:, 1] - origin, corners[:, 2] - origin
    determinant = first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0]
    flat = determinant == 0
    inverse = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, determinant))
    # β and γ are affine in the centre (x, y): per triangle, x·gx + y·gy + g0.
    beta = (second[:, 1] * inverse, -second[:, 0] * inverse)
    gamma = (-first[:, 1] * inverse, first[:, 0] * inverse)
    beta_0 = np.where(flat, 1 / 3, -(origin[:, 0] * beta[0] + origin[:, 1] * beta[1]))
    gamma_0 = np.where(flat, 1 / 3, -(origin[:, 0] * gamma[0] + origin[:, 1] * gamma[1]))
    rows, columns = np.divmod(texels, size)
    x, y = (columns + 0.5).astype(np.float32), (rows + 0.5).astype(np.float32)
    weights = np.empty((len(texels), 3), dtype=np.float32)
    weights[:, 1] = x * beta[0][triangles] + y * beta[1][triangles] + beta_0[triangles]
    weights[:, 2] = x * gamma[0][triangles] + y * gamma[1][triangles] + gamma_0[triangles]
    weights[:, 0] = 1 - weights[:, 1] - weights[:, 2]
    np.maximum(weights, 0, out=weights)
    return weights / weights.sum(axis=1, keepdims=True)
