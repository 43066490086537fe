"""Hostile inputs fail their own request with a clear INVALID_ARGUMENT; the server keeps serving."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.image_server import png_declaring
from tests.triton.conftest import infer_mesh


BAD_IMAGES = {
    "not an image": (b"<html>404 Not Found</html>", "not an image"),
    "zero bytes": (b"", "empty"),
    "bomb": (png_declaring(50_000, 50_000), "pixels"),
}

BAD_PARAMETERS = {
    "resolution too large": ({"resolution": 999}, "resolution"),
    "resolution not a number": ({"resolution": "high"}, "resolution"),
    "threshold negative": ({"threshold": -1.0}, "threshold"),
    "foreground ratio": ({"foreground_ratio": 2.0}, "foreground_ratio"),
    "unknown parameter": ({"quality": "ultra"}, "quality"),
}


def _expect_invalid(client, data: bytes, parameters: dict, fragment: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        infer_mesh(client, data, **parameters)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    message = caught.value.message()
    assert fragment in message.lower(), message
    return message


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_refused_clearly(triton_server, product_jpeg: bytes, case: str) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data, fragment = BAD_IMAGES[case]
    print(f"\n{case}: {_expect_invalid(client, data, {'resolution': 32}, fragment)}")
    assert len(infer_mesh(client, product_jpeg, resolution=32).faces) > 0


def test_truncated_jpeg_is_refused(triton_server, product_jpeg: bytes) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    print("\n" + _expect_invalid(client, product_jpeg[: len(product_jpeg) // 2], {"resolution": 32}, "truncated"))


@pytest.mark.parametrize("case", sorted(BAD_PARAMETERS))
def test_bad_parameters_are_refused_clearly(triton_server, product_jpeg: bytes, case: str) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    parameters, fragment = BAD_PARAMETERS[case]
    print(f"\n{case}: {_expect_invalid(client, product_jpeg, parameters, fragment)}")


def test_a_bad_request_does_not_fail_the_good_ones_beside_it(triton_server, product_jpeg: bytes) -> None:
    """Sent together, they may share a dynamic batch: only the bad one fails."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    payloads = [product_jpeg, b"garbage", product_jpeg, product_jpeg[:500], product_jpeg]

    def attempt(data: bytes) -> str:
        try:
            infer_mesh(client, data, resolution=32)
            return "ok"
        except InferenceServerException as error:
            return error.status()

    with ThreadPoolExecutor(len(payloads)) as pool:
        outcomes = list(pool.map(attempt, payloads))
    assert outcomes == ["ok", "StatusCode.INVALID_ARGUMENT", "ok", "StatusCode.INVALID_ARGUMENT", "ok"]
