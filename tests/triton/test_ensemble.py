"""The ensemble on a real tritonserver: image bytes in, the analytic sphere out."""

import numpy as np
import trimesh
import tritonclient.grpc as grpcclient

from tests.support.triton import ANALYTIC_COLOR, ANALYTIC_RADIUS
from tests.triton.conftest import infer_mesh


def test_analytic_checkpoint_gives_the_known_closed_sphere(triton_server, product_jpeg: bytes) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    result = infer_mesh(client, product_jpeg, resolution=64)

    mesh = trimesh.Trimesh(result.vertices, result.faces, process=True)
    radii = np.linalg.norm(result.vertices, axis=1)
    print(f"\nsphere: {len(result.vertices)} vertices, {len(result.faces)} faces, radius {radii.mean():.4f} "
          f"± {radii.std():.4f} (expected {ANALYTIC_RADIUS}), watertight {mesh.is_watertight}")
    assert mesh.is_watertight
    assert mesh.volume > 0, "faces must wind counter-clockwise seen from outside"
    assert abs(radii.mean() - ANALYTIC_RADIUS) <= 0.01 * ANALYTIC_RADIUS
    assert np.abs(radii - ANALYTIC_RADIUS).max() <= 0.02 * ANALYTIC_RADIUS
    expected = np.round(np.array(ANALYTIC_COLOR) * 255)
    assert np.abs(result.colors.astype(float) - expected).max() <= 2

    assert result.info["resolution"] == 64 and result.info["threshold"] == 25.0
    assert result.info["vertex_count"] == len(result.vertices) and result.info["face_count"] == len(result.faces)
    assert set(result.info["timings_ms"]) == {"grid", "marching_cubes", "colors", "decoder"}
    assert result.weights_version == 1 and result.info["decoder_version"] == 1
    timings = result.info["timings_ms"]
    assert result.info["decoder_calls"] >= 2 and 0 < timings["decoder"] <= timings["grid"] + timings["colors"]


def test_resolution_parameter_changes_the_grid(triton_server, product_jpeg: bytes) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    coarse = infer_mesh(client, product_jpeg, resolution=32)
    fine = infer_mesh(client, product_jpeg, resolution=64)
    assert len(fine.faces) > 3 * len(coarse.faces)
