"""The mesher's texture baking, step by step, on analytic meshes (no network: colours are functions)."""

from __future__ import annotations

import numpy as np
import pytest

from img2mesh import texture_baking
from img2mesh.mesh_extraction import extract_surface


def ball(points: np.ndarray) -> np.ndarray:
    return (25.0 * np.exp(10.0 * (0.25 - (points**2).sum(axis=1)))).astype(np.float32)


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray]:
    surface = extract_surface(ball, 96, 25.0)
    return surface.vertices, surface.faces


def test_decimation_hits_the_target_and_keeps_the_shape(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = sphere
    assert len(faces) > 15_000
    decimated, triangles = texture_baking.decimate(vertices, faces, 3_000)
    assert 2_700 <= len(triangles) <= 3_000
    np.testing.assert_allclose(np.linalg.norm(decimated, axis=1), 0.5, atol=0.02)


def test_meshes_under_the_target_are_left_alone(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = sphere
    same_vertices, same_faces = texture_baking.decimate(vertices, faces, 10**7)
    assert same_vertices is vertices and same_faces is faces


def test_every_face_gets_a_chart_and_every_uv_is_in_the_atlas(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = texture_baking.decimate(*sphere, 5_000)
    mapping, atlas_faces, uvs = texture_baking.unwrap(vertices, faces, 512)
    assert len(atlas_faces) == len(faces)
    assert (0 <= uvs).all() and (uvs <= 1).all() and len(uvs) == len(mapping)
    corners = uvs[atlas_faces].astype(np.float64)
    assert (np.abs(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])) > 0).all()
    np.testing.assert_array_equal(vertices[mapping][atlas_faces[0]], vertices[mapping[atlas_faces[0]]])


def test_texel_points_lie_on_the_surface_and_padding_fills_every_texel(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = texture_baking.decimate(*sphere, 5_000)
    baked = texture_baking.bake(
        vertices, faces, lambda points: np.clip(points + 0.5, 0, 1).astype(np.float32),
        target_faces=5_000, texture_size=256,
    )
    owners, weights = texture_baking.rasterize(baked.uvs, baked.faces, 256)
    flat, points = texture_baking.texel_points(baked.vertices, baked.faces, owners, weights)
    assert len(flat) > 0.4 * 256**2
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 0.5, atol=0.01)
    assert baked.texture.shape == (256, 256, 3)
    # The colour is the position: every covered texel shows its own surface point.
    expected = np.clip(np.round(np.clip(points + 0.5, 0, 1) * 255), 0, 255)
    np.testing.assert_allclose(baked.texture.reshape(-1, 3)[flat], expected, atol=1)
    uncovered = owners.reshape(-1) < 0
    assert uncovered.any() and baked.texture.reshape(-1, 3)[uncovered].any(axis=1).all(), "padding leaves no black"
