"""Request/response plumbing shared by our Triton Python-backend models.

Every model answers each request on its own: a bad input fails only its request with
``INVALID_ARGUMENT`` and the message of :class:`img2mesh.errors.InvalidInput`, while the other
requests of a dynamic batch still succeed. ``triton_python_backend_utils`` exists only inside the
Python-backend stub, so it is passed in by the model rather than imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from img2mesh.contract import IMAGE
from img2mesh.errors import InvalidInput
from img2mesh.image_decoding import decode_image
from img2mesh.parameters import MeshParameters


class RequestCancelled(Exception):
    """The client cancelled or timed out; stop working on its request."""


class DependencyFailed(Exception):
    """A model called through BLS failed or is not ready: worth retrying later."""


def single_bytes(pb_utils: Any, request: Any, name: str) -> bytes:
    """The one BYTES element of input ``name`` (shape [1, 1] from a client sending one image)."""
    array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
    if array.size != 1:
        raise InvalidInput(f"{name} must hold exactly one encoded image per request, got {array.size} elements")
    value = array.reshape(-1)[0]
    return bytes(value) if not isinstance(value, bytes) else value


def request_image(pb_utils: Any, request: Any, max_pixels: int) -> np.ndarray:
    """The request's encoded image decoded to RGBA; hostile files raise InvalidInput here."""
    return decode_image(single_bytes(pb_utils, request, IMAGE), max_pixels=max_pixels)


def input_array(pb_utils: Any, request: Any, name: str) -> np.ndarray:
    """A copy of input ``name``: the shared-memory view dies when ``execute`` returns."""
    return np.array(pb_utils.get_input_tensor_by_name(request, name).as_numpy())


def mesh_parameters(request: Any) -> MeshParameters:
    """Validated request parameters (Triton hands them over as a JSON string)."""
    raw = request.parameters()
    return MeshParameters.from_request(json.loads(raw) if raw else {})


def model_parameter(model_config: dict[str, Any], key: str, default: str) -> str:
    """A ``parameters { key: … }`` string from config.pbtxt, or ``default``."""
    entry = model_config.get("parameters", {}).get(key)
    return entry["string_value"] if entry else default


def answer_each(
    pb_utils: Any, requests: Sequence[Any], handle: Callable[[Any], list[Any]]
) -> list[Any]:
    """Run ``handle`` per request; turn InvalidInput into that request's INVALID_ARGUMENT error.

    A cancelled request answers CANCELLED and a failed BLS dependency UNAVAILABLE, which the
    worker treats as transient.

    Any other exception is a bug or an outage on our side: it fails only its request too, as
    INTERNAL, so one poisoned request cannot take down the batch it was scheduled with.
    """
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handle(request)))
        except InvalidInput as error:
            responses.append(error_response(pb_utils, str(error), pb_utils.TritonError.INVALID_ARG))
        except RequestCancelled:
            responses.append(error_response(pb_utils, "request cancelled", pb_utils.TritonError.CANCELLED))
        except DependencyFailed as error:
            responses.append(error_response(pb_utils, str(error), pb_utils.TritonError.UNAVAILABLE))
        except Exception as error:  # noqa: BLE001 - reported to the caller, never swallowed
            message = f"{type(error).__name__}: {error}"
            pb_utils.Logger.log_error(message)
            responses.append(error_response(pb_utils, message, pb_utils.TritonError.INTERNAL))
    return responses


@dataclass(frozen=True)
class ServedOnnx:
    """What a runner model needs to serve the ``model.onnx`` of its version: config and tensor names."""

    config: dict[str, Any]
    input_names: list[str]
    output_names: list[str]
    path: str

    @classmethod
    def from_args(cls, args: dict[str, str]) -> ServedOnnx:
        """From the ``args`` of a Python model's ``initialize``."""
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        return cls(config, [t["name"] for t in config["input"]], [t["name"] for t in config["output"]], path)


def answer_batched(
    pb_utils: Any,
    requests: Sequence[Any],
    input_names: Sequence[str],
    output_names: Sequence[str],
    infer: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
    engine: str,
) -> list[Any]:
    """Run requests whose input shapes agree as one batch, like a native backend's batcher.

    ``infer`` maps the concatenated inputs to the outputs in ``output_names`` order; a failing
    batch answers each of its requests with the engine's message, and the other groups still run.
    """
    groups: dict[tuple[tuple[int, ...], ...], list[tuple[int, list[np.ndarray]]]] = {}
    for index, request in enumerate(requests):
        arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in input_names]
        groups.setdefault(tuple(array.shape[1:] for array in arrays), []).append((index, arrays))
    responses: list[Any] = [None] * len(requests)
    for members in groups.values():
        feeds = {
            name: np.concatenate([arrays[position] for _, arrays in members])
            for position, name in enumerate(input_names)
        }
        try:
            outputs = infer(feeds)
        except Exception as error:  # noqa: BLE001 - returned to the callers of this batch
            for index, _ in members:
                responses[index] = error_response(pb_utils, f"{engine}: {error}", pb_utils.TritonError.INTERNAL)
            continue
        offset = 0
        for index, arrays in members:
            size = arrays[0].shape[0]
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(output[offset : offset + size]))
                for name, output in zip(output_names, outputs)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            offset += size
    return responses


def error_response(pb_utils: Any, message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
