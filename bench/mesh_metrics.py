"""How far two meshes of the same surface are apart: Chamfer distance and connected components."""

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


def component_count(vertex_count: int, faces: np.ndarray) -> int:
    """Connected components of the mesh's triangles (vertices joined by edges)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(vertex_count, vertex_count))
    used = np.zeros(vertex_count, dtype=bool)
    used[faces.reshape(-1)] = True
    count, labels = connected_components(graph, directed=False)
    return len(np.unique(labels[used]))
