"""What a mesh's topology says about it: its connected parts, the loose flakes among them, its holes.

Marching cubes gives a closed surface for an object inside its grid, and one product is one piece
(or a few large ones), so loose flakes beside it and open edges in it are defects. A textured mesh
arrives with its vertices split along UV seams (docs/architecture.md, "Coordinates"), so vertices
at one position are first welded into one: only then do triangles that meet share their edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

LOOSE_PART_SHARE = 0.05
"""A part whose surface is below this share of the largest part's is a loose flake, not a part of
the product (a cup's handle or a saucer is far larger)."""


@dataclass(frozen=True)
class MeshHealth:
    """``parts``: the connected parts (1 or more); ``loose_parts``: the flakes among them (0 or more);
    ``loose_share``: their share of the surface (0–1); ``open_edges``: the length of the edges only one
    triangle uses, in units of the mesh's largest side (0 for a closed surface); ``loose``: bool [F],
    the triangles of the flakes."""

    parts: int
    loose_parts: int
    loose_share: float
    open_edges: float
    loose: np.ndarray


def mesh_health(positions: np.ndarray, triangles: np.ndarray) -> MeshHealth:
    """The health of a mesh (``positions`` [V, 3] in any frame, ``triangles`` [F, 3], at least one)."""
    welded, corners = _welded(positions, triangles)
    count = len(welded)
    first = np.concatenate([corners[:, 0], corners[:, 1], corners[:, 2]])
    second = np.concatenate([corners[:, 1], corners[:, 2], corners[:, 0]])
    # One entry per undirected edge; converting sums the duplicates, so an entry counts its triangles.
    edges = coo_matrix((np.ones(first.size, dtype=np.int32), (np.minimum(first, second), np.maximum(first, second))),
                       shape=(count, count)).tocsr()
    parts, labels = connected_components(edges, directed=True, connection="weak")
    origin = welded[corners[:, 0]]
    (ax, ay, az), (bx, by, bz) = (welded[corners[:, 1]] - origin).T, (welded[corners[:, 2]] - origin).T
    areas = 0.5 * np.sqrt((ay * bz - az * by) ** 2 + (az * bx - ax * bz) ** 2 + (ax * by - ay * bx) ** 2)
    face_parts = labels[corners[:, 0]]
    part_areas = np.bincount(face_parts, weights=areas, minlength=parts)
    loose = part_areas < LOOSE_PART_SHARE * part_areas.max()
    single = edges.tocoo()
    once = single.data == 1
    open_length = np.linalg.norm(welded[single.row[once]] - welded[single.col[once]], axis=1).sum()
    largest_side = float(np.max(welded.max(axis=0) - welded.min(axis=0)))
    return MeshHealth(
        parts=int(parts),
        loose_parts=int(loose.sum()),
        loose_share=float(part_areas[loose].sum() / max(part_areas.sum(), np.finfo(float).tiny)),
        open_edges=float(open_length / largest_side) if largest_side > 0 else 0.0,
        loose=loose[face_parts],
    )


def _welded(positions: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct positions (exactly equal float32 coordinates are one) and the triangles' corners among them."""
    exact = np.ascontiguousarray(positions, dtype=np.float32) + np.float32(0.0)  # -0.0 becomes 0.0: one bit pattern
    bits = exact.view(np.uint32).reshape(-1, 3)
    x_and_y = (bits[:, 0].astype(np.uint64) << np.uint64(32)) | bits[:, 1]
    order = np.lexsort((bits[:, 2], x_and_y))
    ordered_xy, ordered_z = x_and_y[order], bits[order, 2]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ordered_xy[1:] != ordered_xy[:-1]) | (ordered_z[1:] != ordered_z[:-1])
    index = np.empty(len(order), dtype=np.int64)
    index[order] = np.cumsum(starts) - 1
    return exact[order[starts]].astype(np.float64), index[np.asarray(triangles, dtype=np.int64)]
