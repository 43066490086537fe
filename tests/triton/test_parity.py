"""Triton against the eager PyTorch reference, same weights and image (tiny random and small silhouette checkpoints)."""

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from export.u2net_synthetic import synthetic_product_photo
from img2mesh.background_removal import u2net_mask
from img2mesh.contract import IMAGE_PREPROCESS, REMBG, U2NET_INPUT
from img2mesh.parameters import MeshParameters
from bench.photos import drawn_photos
from tests.triton.conftest import EnsembleResult, image_input, infer_mesh
from triposr.checkpoint import load_tsr
from triposr.reference import Mesh, ReferencePipeline

RESOLUTION = 48


@pytest.fixture(scope="module")
def reference(test_weights) -> ReferencePipeline:
    return ReferencePipeline(load_tsr(str(test_weights.random)), test_weights.u2net)


def test_triton_mesh_equals_the_eager_reference(random_triton_server, reference: ReferencePipeline, product_jpeg: bytes) -> None:
    # Random weights have no surface at the official threshold: mesh at a density quantile instead.
    threshold = reference.density_quantile(product_jpeg, RESOLUTION, 0.7)
    parameters = MeshParameters(resolution=RESOLUTION, threshold=threshold)

    expected = reference.run(product_jpeg, parameters)
    actual = infer_mesh(grpcclient.InferenceServerClient(random_triton_server.grpc_url), product_jpeg,
                        resolution=RESOLUTION, threshold=threshold)

    _assert_same_mesh(actual, expected, f"threshold {threshold:.4g}")


def _assert_same_mesh(actual: EnsembleResult, expected: Mesh, label: str) -> None:
    diagonal = float(np.linalg.norm(expected.vertices.max(0) - expected.vertices.min(0)))
    assert actual.vertices.shape == expected.vertices.shape and actual.faces.shape == expected.faces.shape
    distance = float(np.abs(actual.vertices - expected.vertices).max()) if len(expected.vertices) else 0.0
    print(f"\nparity at {RESOLUTION}³, {label}: {len(expected.vertices)} vertices, "
          f"{len(expected.faces)} faces, max vertex distance {distance:.3g} = {distance / diagonal:.3g} of the diagonal, "
          f"max colour difference {int(np.abs(actual.colors.astype(int) - expected.vertex_colors).max())}/255")
    np.testing.assert_array_equal(actual.faces, expected.faces)
    assert distance <= 1e-4 * diagonal
    assert np.abs(actual.colors.astype(int) - expected.vertex_colors.astype(int)).max() <= 1


def test_silhouette_mesh_equals_the_eager_reference(silhouette_triton_server, test_weights) -> None:
    """The photo-conditioned weights at the official threshold: same mesh and colours from a drawn photo."""
    reference = ReferencePipeline(load_tsr(str(test_weights.silhouette)), test_weights.u2net)
    photo = drawn_photos()[0].encoded()
    expected = reference.run(photo, MeshParameters(resolution=RESOLUTION))
    actual = infer_mesh(grpcclient.InferenceServerClient(silhouette_triton_server.grpc_url), photo, resolution=RESOLUTION)
    _assert_same_mesh(actual, expected, "silhouette, threshold 25")


def test_background_removal_matches_rembg(random_triton_server, test_weights, tmp_path, monkeypatch) -> None:
    """Triton's U²-Net step (preprocess model → rembg model) vs rembg.remove on the same file."""
    import shutil

    import rembg

    home = tmp_path / "u2net_home"
    home.mkdir()
    model_path = shutil.copy(test_weights.u2net, home / "u2net_custom.onnx")
    monkeypatch.setenv("U2NET_HOME", str(home))
    photo = synthetic_product_photo(size=(500, 380))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")

    expected = np.asarray(rembg.remove(photo, session=rembg.new_session("u2net_custom", model_path=str(model_path))))[..., 3]

    client = grpcclient.InferenceServerClient(random_triton_server.grpc_url)
    u2net_in = client.infer(IMAGE_PREPROCESS, [image_input(buffer.getvalue())]).as_numpy(U2NET_INPUT)
    mask_in = grpcclient.InferInput("input", list(u2net_in.shape), "FP32")
    mask_in.set_data_from_numpy(u2net_in)
    prediction = client.infer(REMBG, [mask_in]).as_numpy("mask")
    actual = u2net_mask(prediction[0], np.asarray(photo).shape[:2])

    error = float(np.abs(actual.astype(float) - expected.astype(float)).mean())
    print(f"\nmean alpha error vs rembg.remove: {error:.4f} (of 255)")
    assert actual.shape == expected.shape
    assert error <= 1.0
    assert Image.fromarray(actual).getextrema()[1] == 255
