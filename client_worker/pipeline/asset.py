"""The pipeline core: an encoded photo and a preset in, the finished asset's files out.

It talks to Triton through :class:`TritonMeshClient` and to nothing else: no Redis, no storage, no
webhook. The queue worker (``client_worker.processing``), the ``generate`` command and any other
source of jobs call it, so they all make the same files from the same photo, byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from asset import glb
from asset.mesh_preparation import prepare_mesh
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.presets import Preset

MODEL_FILE = "model"
"""The role of the GLB, the file the webhook's ``modelUrl`` points at."""


@dataclass(frozen=True)
class AssetFile:
    """One file of the asset: its role, file name extension, content type and bytes."""

    role: str
    extension: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Asset:
    """The files made from one photo, and what the job's metadata reports about them."""

    files: tuple[AssetFile, ...]
    details: dict[str, Any]

    def file(self, role: str) -> AssetFile:
        return next(file for file in self.files if file.role == role)


class StageListener(Protocol):
    """Told when each stage of a job starts and how long it took (progress webhooks, metrics)."""

    async def started(self, stage: str) -> None: ...

    def finished(self, stage: str, seconds: float) -> None: ...


@asynccontextmanager
async def timed_stage(name: str, timings_ms: dict[str, float], listener: StageListener | None) -> AsyncIterator[None]:
    """Run one stage: announce it, then record its duration (also when it fails)."""
    if listener is not None:
        await listener.started(name)
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        timings_ms[name] = round(seconds * 1000, 1)
        if listener is not None:
            listener.finished(name, seconds)


class AssetPipeline:
    """Photo bytes + preset → :class:`Asset`, through Triton's ensemble."""

    def __init__(self, inference: TritonMeshClient, *, max_resolution: int) -> None:
        """``max_resolution`` caps every preset's grid (``MAX_RESOLUTION``, for CPU-only Triton hosts)."""
        self.inference = inference
        self.max_resolution = max_resolution

    async def make(self, image: bytes, preset: Preset, listener: StageListener | None = None) -> Asset:
        """Mesh the photo on Triton and write the asset's files.

        Raises:
            PermanentJobError: Triton refused the photo or a parameter.
            TransientJobError: Triton failed or is unavailable (``TritonUnavailable``).
            InvalidInput: the mesh cannot be written (no triangle with an area).
        """
        resolution = min(preset.resolution, self.max_resolution)
        timings: dict[str, float] = {}
        async with timed_stage("inference", timings, listener):
            mesh = await self.inference.image_to_mesh(image, resolution=resolution)
        async with timed_stage("encoding", timings, listener):
            prepared = await asyncio.to_thread(
                prepare_mesh, mesh.vertices, mesh.faces, mesh.vertex_colors, target_faces=preset.target_faces
            )
            model = await asyncio.to_thread(glb.write_glb, prepared)
        summary = glb.glb_summary(model)
        details = {
            "preset": preset.name,
            "resolution": resolution,
            "target_faces": preset.target_faces,
            "model_name": mesh.model_name,
            "model_version": mesh.model_version,
            "weights_version": mesh.weights_version,
            "vertex_count": summary["vertex_count"],
            "face_count": summary["face_count"],
            "file_size_bytes": len(model),
            "mesh_info": mesh.info,
            "timings_ms": timings,
        }
        return Asset(files=(AssetFile(MODEL_FILE, glb.EXTENSION, glb.CONTENT_TYPE, model),), details=details)
