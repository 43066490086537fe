"""How far two meshes of the same surface are apart: Chamfer and Hausdorff distances, connected components."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def chamfer_relative(reference: np.ndarray, other: np.ndarray) -> float:
    """Symmetric mean nearest-vertex distance between two vertex sets, over the reference's bbox diagonal."""
    diagonal = float(np.linalg.norm(reference.max(axis=0) - reference.min(axis=0)))
    to_other, _ = cKDTree(other).query(reference)
    to_reference, _ = cKDTree(reference).query(other)
    return float((to_other.mean() + to_reference.mean()) / 2 / diagonal)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points spread uniformly by area over the mesh's triangles (a fixed seed: the same points
    every run)."""
    corners = np.asarray(vertices, dtype=np.float64)[faces]
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(faces), size=count, p=areas / areas.sum())
    first, second = rng.random((2, count, 1))
    flip = first + second > 1  # folded back into the triangle: uniform over it
    first[flip], second[flip] = 1 - first[flip], 1 - second[flip]
    picked = corners[chosen]
    return picked[:, 0] + first * (picked[:, 1] - picked[:, 0]) + second * (picked[:, 2] - picked[:, 0])


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 16) -> np.ndarray:
    """Each point's distance to the nearest of the mesh's triangles, among the ``candidates`` triangles
    whose centroids are nearest to it (exact for meshes whose triangles are small against their
    distances apart, as marching-cubes and decimated meshes are)."""
    corners = np.asarray(vertices, dtype=np.float64)[faces]
    _, nearest = cKDTree(corners.mean(axis=1)).query(points, k=candidates)
    a, b, c = (corners[nearest, corner] for corner in range(3))  # [N, K, 3] each
    p = np.asarray(points, dtype=np.float64)[:, None, :]
    normal = np.cross(b - a, c - a)
    area2 = np.einsum("nkd,nkd->nk", normal, normal)
    # The point's projection onto the triangle's plane, when it falls inside the triangle.
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.einsum("nkd,nkd->nk", p - a, normal) / area2
        projected = p - offset[..., None] * normal
        inside = np.ones(area2.shape, dtype=bool)
        for start, end in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("nkd,nkd->nk", np.cross(end - start, projected - start), normal) >= 0
    inside &= area2 > 0
    plane = np.where(inside, np.abs(offset) * np.sqrt(np.where(area2 > 0, area2, 1.0)), np.inf)
    # Otherwise the nearest point lies on one of its edges.
    edges = []
    for start, end in ((a, b), (b, c), (c, a)):
        along = end - start
        length2 = np.einsum("nkd,nkd->nk", along, along)
        t = np.clip(np.einsum("nkd,nkd->nk", p - start, along) / np.where(length2 > 0, length2, 1.0), 0, 1)
        edges.append(np.linalg.norm(p - (start + t[..., None] * along), axis=2))
    return np.minimum(plane, np.minimum.reduce(edges)).min(axis=1)


def chamfer_hausdorff(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray],
                      samples: int) -> tuple[float, float]:
    """``(Chamfer, Hausdorff)`` between two meshes ``(vertices, faces)``: the mean of the two directions'
    mean distances, and the largest distance, from ``samples`` area samples of each to the other mesh."""
    to_second = distance_to_mesh(surface_samples(*first, samples, seed=1), *second)
    to_first = distance_to_mesh(surface_samples(*second, samples, seed=2), *first)
    return float((to_second.mean() + to_first.mean()) / 2), float(max(to_second.max(), to_first.max()))


def component_count(vertex_count: int, faces: np.ndarray) -> int:
    """Connected components of the mesh's triangles (vertices joined by edges)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(vertex_count, vertex_count))
    used = np.zeros(vertex_count, dtype=bool)
    used[faces.reshape(-1)] = True
    count, labels = connected_components(graph, directed=False)
    return len(np.unique(labels[used]))
