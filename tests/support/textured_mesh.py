"""A textured test product whose colours are known everywhere, as Triton's texture baking returns it.

An upright ellipsoid in the TripoSR frame (z up, front +X, image-right +Y), unwrapped by latitude
and longitude: u = longitude / 2π, v = colatitude / π (glTF's convention: v = 0 is the image's top
row, the product's top). Its texture is red on the product's right (+Y in TripoSR, +X in glTF),
blue on its left, and green on a bottom band, so a mirrored image (left/right) and a flipped one
(top/bottom) both show. The longitude seam is a column of duplicated vertices (u = 0 and u = 1 at
the same positions), as an unwrapper leaves it; the poles give degenerate triangles, as
marching cubes does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RED = (220, 30, 30)
BLUE = (30, 60, 220)
GREEN = (40, 180, 60)

#: The green band is the bottom of the product below this colatitude (v > 0.75).
GREEN_BELOW_V = 0.75
#: … which is this fraction of the product's height above its lowest point: (1 - cos(π/4)) / 2.
GREEN_HEIGHT_FRACTION = (1 - np.cos(np.pi / 4)) / 2

SEMI_AXES = (0.3, 0.35, 0.5)
"""TripoSR-frame semi-axes: depth (x), width (y), height (z)."""


@dataclass(frozen=True)
class TexturedMesh:
    """``vertices``/``faces``/``vertex_colors`` as Triton returns them, plus ``uvs`` and ``texture``."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray


def color_at(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The test texture's colour (uint8 RGB) at glTF UVs: red for u < ½ (the right side, where
    sin(longitude) > 0), blue for u > ½, green below ``GREEN_BELOW_V``."""
    colors = np.where((np.asarray(u) < 0.5)[..., None], RED, BLUE)
    return np.where((np.asarray(v) > GREEN_BELOW_V)[..., None], GREEN, colors).astype(np.uint8)


def textured_product(latitudes: int = 60, longitudes: int = 80, texture_size: int = 256) -> TexturedMesh:
    """The test product with ``2 · latitudes · longitudes`` triangles (fewer after dropping the
    poles' degenerate ones) and a square texture."""
    colatitude = np.linspace(0.0, np.pi, latitudes + 1)
    longitude = np.linspace(0.0, 2 * np.pi, longitudes + 1)
    theta, phi = np.meshgrid(colatitude, longitude, indexing="ij")
    ring = np.sin(theta)
    ring[[0, -1]] = 0.0  # the poles exactly on the axis
    depth, width, height = SEMI_AXES
    grid = np.stack([depth * ring * np.cos(phi), width * ring * np.sin(phi), height * np.cos(theta)], axis=-1)
    grid[:, -1] = grid[:, 0]  # the seam's two copies at exactly one position, as an unwrapper leaves them
    vertices = grid.reshape(-1, 3)
    uvs = np.stack([phi / (2 * np.pi), theta / np.pi], axis=-1).reshape(-1, 2)
    row = np.arange(latitudes)[:, None] * (longitudes + 1)
    column = np.arange(longitudes)[None, :]
    a, b = row + column, row + column + 1
    c, d = a + longitudes + 1, b + longitudes + 1
    # Counter-clockwise seen from outside: down the meridian (a → c), then east (c → d).
    faces = np.concatenate([np.stack([a, c, d], -1).reshape(-1, 3), np.stack([a, d, b], -1).reshape(-1, 3)])
    texel = (np.arange(texture_size) + 0.5) / texture_size
    texture_v, texture_u = np.meshgrid(texel, texel, indexing="ij")
    return TexturedMesh(
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.int32),
        vertex_colors=color_at(uvs[:, 0], uvs[:, 1]),
        uvs=uvs.astype(np.float32),
        texture=color_at(texture_u, texture_v),
    )


def expected_color(positions: np.ndarray) -> np.ndarray:
    """The colour the test product should show at prepared (glTF-frame, standing on y = 0)
    surface points: green on the bottom band, else red for x > 0 and blue for x < 0."""
    height = positions[:, 1] / positions[:, 1].max()
    colors = np.where((positions[:, 0] > 0)[:, None], RED, BLUE)
    return np.where((height < GREEN_HEIGHT_FRACTION)[:, None], GREEN, colors).astype(np.uint8)


def away_from_colour_edges(positions: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Mask of prepared surface points at least ``margin`` (relative) away from every colour edge
    of the test product, where texture filtering cannot mix two colours."""
    low, high = positions.min(axis=0), positions.max(axis=0)
    relative = (positions - low) / (high - low)
    return (np.abs(relative[:, 0] - 0.5) > margin) & (np.abs(relative[:, 1] - GREEN_HEIGHT_FRACTION) > margin)
