"""The worker's only contact with the model: gRPC calls to Triton's `image_to_mesh` ensemble (and,
through `infer`, to the `photo_check` ensemble of `client_worker.pipeline.photo_check`).

The request is the encoded image file as `IMAGE` (BYTES, shape [1, 1]) plus the optional request
parameters of docs/architecture.md (grid resolution, triangle budget, texture size …). Errors are
mapped once, here: `INVALID_ARGUMENT` means the image or a parameter is bad, so the job fails
permanently with Triton's own message; anything else is transient. When Triton itself is down or
its model is not ready, `TritonUnavailable` tells the worker to pause instead of spending the
job's attempts on an outage.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from client_worker.config import Settings
from client_worker.errors import PermanentJobError, TransientJobError
from img2mesh.contract import (
    CONFIG_U2NET_VERSIONS,
    ENSEMBLE,
    FACES,
    FOREGROUND_RATIO,
    FRAMED_PHOTO,
    IMAGE,
    MESH_INFO,
    MESH_OUTPUTS,
    REMBG,
    RESOLUTION,
    TARGET_FACES,
    TEXTURE,
    TEXTURE_SIZE,
    THRESHOLD,
    UVS,
    VERTEX_COLORS,
    VERTICES,
    WEIGHTS_VERSION,
)

OUTPUTS = MESH_OUTPUTS
"""Always asked for; `OPTIONAL_OUTPUTS` too when the served model has them (a repository exported
before they existed lacks them)."""
OPTIONAL_OUTPUTS = (WEIGHTS_VERSION, FRAMED_PHOTO)
"""`WEIGHTS_VERSION`: the ensemble's own version is always the ensemble's and its steps follow the
latest weights, so the weights' version is the one worth reporting. `FRAMED_PHOTO`: the cut-out as
TripoSR framed it, which the asset is checked against (docs/quality-check.md)."""
_PERMANENT_CODES = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"}
_ENSEMBLE_PREFIX = re.compile(r"^(?:in ensemble '[^']*', )+")
"""Triton's prefix on an ensemble step's error: where it failed, not what was wrong."""
_PROBE_TIMEOUT_S = 2.0


def channel_args() -> list[tuple[str, int | str]]:
    """tritonclient's own channel options, plus round robin over every address of the target.

    A target that resolves to several addresses (`dns:///` of a headless Kubernetes Service: one
    address per ready Triton pod) then gets its calls spread over all of them; gRPC's default
    would send every call over the one connection it picked first. With one address (compose's
    `triton:8001`) nothing changes. tritonclient *replaces* its defaults when given channel
    arguments, so they are restated here from its own constants.
    """
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.lb_policy_name", "round_robin"),
    ]


class TritonUnavailable(TransientJobError):
    """Triton is unreachable or the model is not ready: wait for it rather than count an attempt."""


@dataclass(frozen=True)
class MeshResult:
    """A mesh in the TripoSR world frame, as ``asset.mesh_preparation.prepare_mesh`` takes it.

    ``uvs`` and ``texture`` are the baked colour texture (glTF UV convention) when a texture size
    was asked for, None otherwise. ``framed_photo`` is the cut-out as TripoSR framed it (RGBA uint8,
    ``FRAMED_PHOTO``), None from a repository exported before it existed.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray
    info: dict[str, Any]
    model_name: str
    model_version: str
    weights_version: str | None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    framed_photo: np.ndarray | None = None


def status_code(error: InferenceServerException) -> str:
    """`INVALID_ARGUMENT` from tritonclient's `StatusCode.INVALID_ARGUMENT` (or '' when unknown)."""
    return str(error.status() or "").rsplit(".", 1)[-1]


class TritonMeshClient:
    """An asyncio gRPC client of one mesh model; safe to share between concurrent jobs."""

    def __init__(self, url: str, model_name: str = ENSEMBLE, model_version: str = "",
                 timeout_s: float = Settings.default("triton_timeout_s"), weights_version: str = "") -> None:
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.weights_version = weights_version
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args())
        self._outputs: list[str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, url: str | None = None, model_version: str | None = None
                      ) -> TritonMeshClient:
        """The client the settings describe (``TRITON_*``); ``url`` and ``model_version`` override theirs."""
        return cls(
            url or settings.triton_url,
            settings.triton_model_name,
            settings.triton_model_version if model_version is None else model_version,
            settings.triton_timeout_s,
            weights_version=settings.triton_weights_version,
        )

    async def close(self) -> None:
        await self._client.close()

    async def readiness(self, timeout_s: float = _PROBE_TIMEOUT_S, *, model_name: str | None = None) -> str | None:
        """None when the model (this client's, or the latest version of ``model_name``) is ready, else why
        not (for logs and the start-up error)."""
        name, pinned = (self.model_name, self.model_version) if model_name is None else (model_name, "")
        try:
            if not await self._client.is_server_live(client_timeout=timeout_s):
                return f"Triton at {self.url} is not live"
            if not await self._client.is_model_ready(name, pinned, client_timeout=timeout_s):
                return f"model {name!r} (version {pinned or 'latest'}) is not ready on Triton at {self.url}"
        except InferenceServerException as error:
            return f"Triton at {self.url} is unreachable ({status_code(error) or 'error'}: {error.message()})"
        return None

    async def wait_ready(self, timeout_s: float, poll_s: float = 1.0, *, model_name: str | None = None) -> None:
        """Wait until the model (or ``model_name``) is ready; raises TritonUnavailable with the last reason
        after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            reason = await self.readiness(model_name=model_name)
            if reason is None:
                return
            if time.monotonic() >= deadline:
                raise TritonUnavailable(f"{reason} after waiting {timeout_s:g} s; check TRITON_URL and the model name")
            await asyncio.sleep(poll_s)

    async def image_to_mesh(
        self,
        image: bytes,
        *,
        resolution: int | None = None,
        threshold: float | None = None,
        foreground_ratio: float | None = None,
        target_faces: int | None = None,
        texture_size: int | None = None,
    ) -> MeshResult:
        """Run the ensemble on one encoded image file.

        Raises:
            PermanentJobError: Triton refused the input (not an image, too many pixels, bad parameter).
            TritonUnavailable: Triton or the model is down; the job should wait, not fail.
            TransientJobError: any other failure (deadline exceeded, internal error).
        """
        given = {
            RESOLUTION: resolution, THRESHOLD: threshold, FOREGROUND_RATIO: foreground_ratio,
            TARGET_FACES: target_faces, TEXTURE_SIZE: texture_size,
        }
        parameters = {parameter.name: parameter.kind(value) for parameter, value in given.items() if value is not None}
        async with self._mapped_errors():
            outputs = await self._output_names()
        result = await self.infer(self.model_name, image, outputs, model_version=self.model_version,
                                  parameters=parameters)
        return self._mesh(result)

    async def infer(
        self, model_name: str, image: bytes, outputs: list[str], *, model_version: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> grpcclient.InferResult:
        """One request with one encoded image as ``IMAGE`` to ``model_name`` (this client's model, or
        another of its server's, e.g. the photo check), its errors mapped as ``image_to_mesh``'s."""
        image_input = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
        image_input.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        async with self._mapped_errors():
            return await self._client.infer(
                model_name,
                [image_input],
                model_version=model_version,
                outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                client_timeout=self.timeout_s,
                parameters=parameters or None,
            )

    @asynccontextmanager
    async def _mapped_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except InferenceServerException as error:
            raise await self._mapped(error) from None

    async def served_versions(self) -> dict[str, int]:
        """The version of the model and of each step of its ensemble that a request sent now runs.

        A step that names no version (-1, as every step of ``image_to_mesh`` does) runs the latest
        version that is ready, which is what a model version roll changes
        (docs/runbook.md, "Model versions: export, roll forward, roll back"); the mesher calls the
        decoder of the encoder's version, so the encoder's covers it.

        Raises:
            TritonUnavailable: Triton is down, or a model has no ready version.
            TransientJobError: Triton failed to answer.
        """
        async with self._mapped_errors():
            config = await self._client.get_model_config(
                self.model_name, self.model_version, as_json=True, client_timeout=_PROBE_TIMEOUT_S
            )
            index = await self._client.get_model_repository_index(as_json=True, client_timeout=_PROBE_TIMEOUT_S)
        ready: dict[str, list[int]] = {}
        for entry in index.get("models", []):
            if entry.get("state") == "READY" and entry.get("version"):
                ready.setdefault(entry["name"], []).append(int(entry["version"]))
        steps = config["config"].get("ensemble_scheduling", {}).get("step", [])
        wanted = {self.model_name: int(self.model_version or -1)}
        wanted.update({step["model_name"]: int(step.get("model_version", -1)) for step in steps})
        versions = {}
        for name, version in wanted.items():
            if version == -1:
                if not ready.get(name):
                    raise TritonUnavailable(f"model {name!r} has no ready version on Triton at {self.url}")
                version = max(ready[name])
            versions[name] = version
        return versions

    async def background_removal(self) -> dict[str, Any]:
        """Which U²-Net the served ``rembg`` version is: ``{"version", "name", "md5"}``.

        The exporter records each version's network in rembg's config (``CONFIG_U2NET_VERSIONS``);
        ``name`` is rembg's (``u2net``, ``u2netp`` …), None for a file exported unverified, and
        ``"unrecorded"`` with no md5 for a version exported before the records.

        Raises:
            TritonUnavailable: Triton is down, or a model has no ready version.
            TransientJobError: Triton failed to answer.
        """
        version = (await self.served_versions())[REMBG]
        async with self._mapped_errors():
            config = await self._client.get_model_config(REMBG, as_json=True, client_timeout=_PROBE_TIMEOUT_S)
        parameter = config["config"].get("parameters", {}).get(CONFIG_U2NET_VERSIONS, {})
        records = json.loads(parameter.get("string_value") or "{}")
        return {"version": version, **records.get(str(version), {"name": "unrecorded", "md5": None})}

    async def _output_names(self) -> list[str]:
        """OUTPUTS, plus those of OPTIONAL_OUTPUTS the served model has (read once from its metadata)."""
        if self._outputs is None:
            metadata = await self._client.get_model_metadata(
                self.model_name, self.model_version, client_timeout=_PROBE_TIMEOUT_S
            )
            served = {output.name for output in metadata.outputs}
            self._outputs = [*OUTPUTS, *(name for name in OPTIONAL_OUTPUTS if name in served)]
        return self._outputs

    def _optional(self, result: grpcclient.InferResult, name: str) -> np.ndarray | None:
        """Output ``name`` of OPTIONAL_OUTPUTS for this request's one image, or None when not served."""
        array = result.as_numpy(name) if name in (self._outputs or ()) else None
        return None if array is None else array[0]

    async def _mapped(self, error: InferenceServerException) -> Exception:
        code = status_code(error)
        message = _ENSEMBLE_PREFIX.sub("", error.message() or str(error))
        if code in _PERMANENT_CODES:
            return PermanentJobError(f"the model refused the image: {message}")
        if code == "DEADLINE_EXCEEDED":
            return TransientJobError(f"Triton did not answer within {self.timeout_s:g} s (TRITON_TIMEOUT_S)")
        reason = await self.readiness()
        if reason is not None:
            return TritonUnavailable(f"{reason} ({code}: {message})")
        return TransientJobError(f"Triton failed the request ({code or 'error'}: {message})")

    def _mesh(self, result: grpcclient.InferResult) -> MeshResult:
        arrays = {name: result.as_numpy(name) for name in OUTPUTS}
        missing = [name for name, array in arrays.items() if array is None]
        if missing:
            raise TransientJobError(f"Triton's answer lacks the outputs {', '.join(missing)}")
        info_bytes = arrays[MESH_INFO].reshape(-1)[0]
        info = json.loads(info_bytes.decode("utf-8") if isinstance(info_bytes, bytes) else str(info_bytes))
        response = result.get_response()
        weights = self._optional(result, WEIGHTS_VERSION)
        served = str(int(weights.reshape(-1)[0])) if weights is not None else None
        if self.weights_version and served != self.weights_version:
            raise TransientJobError(
                f"Triton made this mesh with TripoSR weights version {served or 'unknown'}, but this worker is pinned "
                f"to version {self.weights_version} (TRITON_WEIGHTS_VERSION): roll Triton to it "
                f"(python -m export.rollout roll --version {self.weights_version}) or unpin the worker"
            )
        return MeshResult(
            vertices=np.asarray(arrays[VERTICES][0], dtype=np.float32),
            faces=np.asarray(arrays[FACES][0], dtype=np.int32),
            vertex_colors=np.asarray(arrays[VERTEX_COLORS][0], dtype=np.uint8),
            uvs=np.asarray(arrays[UVS][0], dtype=np.float32) if arrays[TEXTURE][0].size else None,
            texture=np.asarray(arrays[TEXTURE][0], dtype=np.uint8) if arrays[TEXTURE][0].size else None,
            framed_photo=self._optional(result, FRAMED_PHOTO),
            info=info,
            model_name=response.model_name or self.model_name,
            model_version=response.model_version or self.model_version,
            weights_version=served,
        )
