"""Texture baking in the mesher keeps a sharp colour edge that vertex colours smear.

The two-colour analytic ball is red where x > 0 and blue where x < 0 (TripoSR frame), with the
edge on the plane x = 0. After decimation to the ``fast`` budget, colours sampled on the surface
must be within 4/255 of the analytic colour away from the edge, and the edge no more than 2 texels
off its true place. The same check on the vertex colours of the same decimated mesh fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client_worker.pipeline.presets import PRESETS
from tests.triton.conftest import EnsembleResult, infer_mesh
from triposr.synthetic import BACK_COLOR, FRONT_COLOR

FAST = PRESETS["fast"]
TOLERANCE = 4
EDGE_TEXELS = 2.0
AWAY = 0.02
"""World distance from the plane x = 0 beyond which a sample counts as away from the edge: the
field's own step is 0.005 wide and a texel of the fast texture about 0.005."""
FRONT = np.round(np.array(FRONT_COLOR) * 255)
BACK = np.round(np.array(BACK_COLOR) * 255)


@pytest.fixture(scope="module")
def baked(two_color_triton_server, product_jpeg: bytes) -> EnsembleResult:  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(two_color_triton_server.grpc_url)
    return infer_mesh(client, product_jpeg, resolution=FAST.resolution, target_faces=FAST.target_faces,
                      texture_size=FAST.texture_size)


def surface_samples(result: EnsembleResult, per_face: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(face of each sample, barycentric weights, world points)``, evenly spread over every face."""
    rng = np.random.default_rng(0)
    faces = np.repeat(np.arange(len(result.faces)), per_face)
    weights = rng.dirichlet(np.ones(3), size=len(faces))
    points = np.einsum("nk,nkd->nd", weights, result.vertices[result.faces[faces]])
    return faces, weights, points


def texel_size(result: EnsembleResult, faces: np.ndarray) -> np.ndarray:
    """The world size of one texel on each sampled face: √(world area / area in texels)."""
    corners = result.vertices[result.faces[faces]].astype(np.float64)
    world = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    uv = result.uvs[result.faces[faces]].astype(np.float64) * len(result.texture)
    texels = np.abs(np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])) / 2
    return np.sqrt(world / np.maximum(texels, 1e-12))


def sampled_from_texture(result: EnsembleResult, faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    uv = np.einsum("nk,nkd->nd", weights, result.uvs[result.faces[faces]])
    size = len(result.texture)
    columns = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    rows = np.clip((uv[:, 1] * size).astype(int), 0, size - 1)
    return result.texture[rows, columns].astype(float)


def sampled_from_vertices(result: EnsembleResult, faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.einsum("nk,nkd->nd", weights, result.colors[result.faces[faces]].astype(float))


def edge_errors(colors: np.ndarray, points: np.ndarray, texel: np.ndarray) -> tuple[float, float]:
    """(worst colour error away from the edge, in 1/255; worst misplacement of the edge, in texels)."""
    x = points[:, 0]
    expected = np.where((x > 0)[:, None], FRONT, BACK)
    away = np.abs(x) > AWAY
    worst_colour = float(np.abs(colors[away] - expected[away]).max())
    looks_front = np.linalg.norm(colors - FRONT, axis=1) < np.linalg.norm(colors - BACK, axis=1)
    wrong_side = looks_front != (x > 0)
    worst_edge = float((np.abs(x[wrong_side]) / texel[wrong_side]).max()) if wrong_side.any() else 0.0
    return worst_colour, worst_edge


def test_the_mesher_bakes_a_texture_at_the_presets_size_and_budget(baked: EnsembleResult) -> None:
    assert baked.texture.shape == (FAST.texture_size, FAST.texture_size, 3) and baked.texture.dtype == np.uint8
    assert len(baked.uvs) == len(baked.vertices) and (0 <= baked.uvs).all() and (baked.uvs <= 1).all()
    assert 0.9 * FAST.target_faces <= len(baked.faces) <= FAST.target_faces
    assert baked.info["texture_size"] == FAST.texture_size and "texture" in baked.info["timings_ms"]


def test_the_baked_texture_keeps_the_colour_edge(baked: EnsembleResult) -> None:
    faces, weights, points = surface_samples(baked)
    colour, edge = edge_errors(sampled_from_texture(baked, faces, weights), points, texel_size(baked, faces))
    print(f"\ntexture: worst colour error away from the edge {colour:.1f}/255, edge off by at most {edge:.2f} texels")
    assert colour <= TOLERANCE
    assert edge <= EDGE_TEXELS


def test_vertex_colours_of_the_same_mesh_smear_the_edge(baked: EnsembleResult) -> None:
    faces, weights, points = surface_samples(baked)
    colour, edge = edge_errors(sampled_from_vertices(baked, faces, weights), points, texel_size(baked, faces))
    print(f"\nvertex colours: worst colour error away from the edge {colour:.1f}/255, edge off by {edge:.2f} texels")
    assert colour > TOLERANCE or edge > EDGE_TEXELS
