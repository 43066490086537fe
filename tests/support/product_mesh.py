"""A small product mesh as Triton's mesher returns it, for the writers' tests."""

from __future__ import annotations

import numpy as np

from img2mesh.mesh_extraction import grid_points, marching_cubes

RED = (255, 0, 0)
GREY = (128, 128, 128)


def product_mesh(resolution: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mesh in the TripoSR frame, as the mesher returns it: a tall body (z up) with a red bump
    on its front (+X); everything else grey."""
    points = grid_points(resolution)
    body = (points[:, 0] / 0.25) ** 2 + (points[:, 1] / 0.4) ** 2 + (points[:, 2] / 0.6) ** 2
    bump = np.sum((points - np.array([0.3, 0.0, 0.0])) ** 2, axis=1) / 0.15**2
    density = 50.0 * np.exp(1.0 - np.minimum(body, bump))
    vertices, faces = marching_cubes(density, resolution, threshold=50.0)
    colors = np.where((vertices[:, 0] > 0.3)[:, None], RED, GREY).astype(np.uint8)
    return vertices, faces, colors
