"""Helpers for calling the ``image_to_mesh`` ensemble with tritonclient, as a client would."""

import io
import json
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export.u2net_synthetic import synthetic_product_photo
from img2mesh.contract import (
    ENSEMBLE,
    FACES,
    IMAGE,
    MESH_INFO,
    MESH_OUTPUTS,
    TEXTURE,
    UVS,
    VERTEX_COLORS,
    VERTICES,
    WEIGHTS_VERSION,
)

OUTPUTS = (*MESH_OUTPUTS, WEIGHTS_VERSION)


@dataclass
class EnsembleResult:
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray
    info: dict
    weights_version: int


def image_input(data: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return tensor


def infer_mesh(client: grpcclient.InferenceServerClient, data: bytes, **parameters: object) -> EnsembleResult:
    result = client.infer(
        ENSEMBLE,
        [image_input(data)],
        outputs=[grpcclient.InferRequestedOutput(name) for name in OUTPUTS],
        parameters=parameters or None,
        client_timeout=300,
    )
    return EnsembleResult(
        vertices=result.as_numpy(VERTICES)[0],
        faces=result.as_numpy(FACES)[0],
        colors=result.as_numpy(VERTEX_COLORS)[0],
        uvs=result.as_numpy(UVS)[0],
        texture=result.as_numpy(TEXTURE)[0],
        info=json.loads(result.as_numpy(MESH_INFO).reshape(-1)[0]),
        weights_version=int(result.as_numpy(WEIGHTS_VERSION).reshape(-1)[0]),
    )


@pytest.fixture(scope="session")
def product_jpeg() -> bytes:
    buffer = io.BytesIO()
    synthetic_product_photo().save(buffer, "JPEG", quality=92)
    return buffer.getvalue()
