"""The Triton client against a real tritonserver: outputs, and how each failure is classified."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from client_worker.errors import PermanentJobError, TransientJobError
from client_worker.pipeline.inference import TritonMeshClient, TritonUnavailable
from img2mesh.contract import ENCODER, ENSEMBLE, FOREGROUND, IMAGE_PREPROCESS, MESHER, REMBG
from local_triton import LocalTriton, free_port
from tests.worker.conftest import E2E_RESOLUTION


async def test_mesh_outputs_and_versions(triton_server: LocalTriton, product_photo: bytes) -> None:
    client = TritonMeshClient(triton_server.grpc_url)
    try:
        await client.wait_ready(10)
        mesh = await client.image_to_mesh(product_photo, resolution=E2E_RESOLUTION, foreground_ratio=0.8)
    finally:
        await client.close()
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape[1] == 3 and len(mesh.vertices) > 0
    assert mesh.faces.dtype == np.int32 and mesh.faces.max() < len(mesh.vertices)
    assert mesh.vertex_colors.dtype == np.uint8 and mesh.vertex_colors.shape == mesh.vertices.shape
    assert mesh.info["resolution"] == E2E_RESOLUTION and mesh.info["face_count"] == len(mesh.faces)
    assert (mesh.model_name, mesh.model_version, mesh.weights_version) == (ENSEMBLE, "1", "1")


async def test_a_worker_pinned_to_other_weights_refuses_the_mesh(triton_server: LocalTriton, product_photo: bytes) -> None:
    """TRITON_WEIGHTS_VERSION: never ship a GLB made with weights other than the pinned ones."""
    pinned = TritonMeshClient(triton_server.grpc_url, weights_version="2")
    matching = TritonMeshClient(triton_server.grpc_url, weights_version="1")
    try:
        with pytest.raises(TransientJobError, match=r"weights version 1, but this worker is pinned to version 2") as caught:
            await pinned.image_to_mesh(product_photo, resolution=E2E_RESOLUTION)
        assert not isinstance(caught.value, TritonUnavailable)
        assert (await matching.image_to_mesh(product_photo, resolution=E2E_RESOLUTION)).weights_version == "1"
    finally:
        await pinned.close()
        await matching.close()


async def test_bad_input_is_permanent_with_tritons_message(triton_server: LocalTriton, product_photo: bytes) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 255, 255, 0)).save(buffer, "PNG")  # a cut-out with nothing in it
    client = TritonMeshClient(triton_server.grpc_url)
    try:
        with pytest.raises(PermanentJobError, match="^the model refused the image: the data is text, not an image"):
            await client.image_to_mesh(b"plain text, not a photo")
        with pytest.raises(PermanentJobError, match="resolution must be from"):
            await client.image_to_mesh(product_photo, resolution=8)
        with pytest.raises(PermanentJobError, match="^the model refused the image: no foreground object found"):
            await client.image_to_mesh(buffer.getvalue(), resolution=E2E_RESOLUTION)
    finally:
        await client.close()


async def test_deadline_is_transient_but_not_an_outage(triton_server: LocalTriton, product_photo: bytes) -> None:
    client = TritonMeshClient(triton_server.grpc_url, timeout_s=0.001)
    try:
        with pytest.raises(TransientJobError, match="did not answer within") as caught:
            await client.image_to_mesh(product_photo, resolution=E2E_RESOLUTION)
    finally:
        await client.close()
    assert not isinstance(caught.value, TritonUnavailable)


async def test_unreachable_triton_is_an_outage() -> None:
    client = TritonMeshClient(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TritonUnavailable, match="unreachable"):
            await client.image_to_mesh(b"\xff\xd8\xff", resolution=E2E_RESOLUTION)
        with pytest.raises(TritonUnavailable, match="check TRITON_URL"):
            await client.wait_ready(0)
    finally:
        await client.close()


async def test_missing_model_is_reported_by_name(triton_server: LocalTriton) -> None:
    client = TritonMeshClient(triton_server.grpc_url, model_name=ENSEMBLE, model_version="7")
    try:
        reason = await client.readiness()
    finally:
        await client.close()
    assert reason is not None and f"'{ENSEMBLE}' (version 7) is not ready" in reason


async def test_served_versions_name_the_ensemble_and_every_step(triton_server: LocalTriton) -> None:
    client = TritonMeshClient(triton_server.grpc_url)
    unreachable = TritonMeshClient(f"127.0.0.1:{free_port()}")
    try:
        versions = await client.served_versions()
        with pytest.raises(TritonUnavailable, match="unreachable"):
            await unreachable.served_versions()
    finally:
        await client.close()
        await unreachable.close()
    assert versions == {ENSEMBLE: 1, IMAGE_PREPROCESS: 1, REMBG: 1, FOREGROUND: 1, ENCODER: 1, MESHER: 1}
