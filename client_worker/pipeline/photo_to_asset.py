"""The pipeline core: an encoded photo and a preset in, the finished asset's files out.

It talks to Triton through :class:`TritonMeshClient` and to nothing else: no Redis, no storage, no
webhook. The queue worker (``client_worker.processing``), the ``generate`` command and any other
source of jobs call it, so they all make the same files from the same photo, byte for byte.

One prepared mesh (``asset.mesh_preparation``: glTF frame, real size, the baked texture when
Triton returns one) becomes three files: the GLB (web viewers and Android's Scene Viewer), the
USDZ (AR Quick Look on iPhone and iPad) and the poster PNG, all with the preset's material. Then the
files check themselves against the photo (``client_worker.pipeline.quality_check``, docs/quality-check.md):
under ``review`` and ``strict`` an asset whose outline falls short is made once more at the next
preset, whose finer grid keeps thin parts, before the verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from asset import glb, poster, usdz
from asset.material import Material
from asset.mesh_preparation import PreparedMesh, prepare_mesh
from asset.real_size import RealSize
from client_worker.config import QualityCheckMode
from client_worker.pipeline.content_address import ContentAddress, content_address, writer_version
from client_worker.pipeline.inference import MeshResult, TritonMeshClient
from client_worker.pipeline.presets import Preset, next_preset
from client_worker.pipeline.quality_check import (
    QUALITY_KEY,
    QualityMeasures,
    Unmeasurable,
    measure_quality,
    quality_report,
    refusal,
    retry_report,
    worth_retrying,
)
from client_worker.pipeline.stages import Stage
from img2mesh.contract import ENSEMBLE, FRAMED_PHOTO

MODEL_FILE = "model"
"""The role of the GLB, the file the webhook's ``modelUrl`` points at."""
USDZ_FILE = "usdz"
"""The role of the USDZ, for AR Quick Look."""
POSTER_FILE = "poster"
"""The role of the poster image."""
QUALITY_TIMING = "quality"
"""The key of the check's duration in ``timings_ms`` (a part of ``encoding``)."""
NO_FRAMED_PHOTO = (f"Triton's {ENSEMBLE} returns no {FRAMED_PHOTO}: the repository was exported before the check "
                   "existed (python -m export configs --output REPOSITORY brings it up to date)")


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


@dataclass(frozen=True)
class _Made:
    """One run of the model and the writers: the files, their details, and the check's measures or why
    there are none."""

    files: tuple[AssetFile, ...]
    details: dict[str, Any]
    measures: QualityMeasures | None
    unchecked: str | None


class StageListener(Protocol):
    """Told when each stage of a job starts and how long it took (progress webhooks, metrics)."""

    async def started(self, stage: Stage) -> None: ...

    def finished(self, stage: Stage, seconds: float) -> None: ...


@asynccontextmanager
async def timed_stage(name: Stage, timings_ms: dict[str, float], listener: StageListener | None) -> AsyncIterator[None]:
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

    def __init__(self, inference: TritonMeshClient, *, max_resolution: int, default_size: RealSize) -> None:
        """``max_resolution`` caps every preset's grid (``MAX_RESOLUTION``, for CPU-only Triton hosts);
        ``default_size`` is the real size of a product whose job names none (``DEFAULT_LARGEST_SIDE_M``)."""
        self.inference = inference
        self.max_resolution = max_resolution
        self.default_size = default_size

    def resolved(self, preset: Preset) -> Preset:
        """The preset as Triton is asked to run it: its grid capped at ``max_resolution``."""
        return replace(preset, resolution=min(preset.resolution, self.max_resolution))

    async def address(self, image: bytes, preset: Preset, *, size: RealSize | None = None) -> ContentAddress:
        """The content address of the asset :meth:`make` would make now from these arguments
        (``content_address``; asks Triton which model versions it serves)."""
        versions = await self.inference.served_versions()
        return content_address(image, self.resolved(preset), size or self.default_size, size is not None, versions,
                               writer_version())

    async def make(
        self, image: bytes, preset: Preset, listener: StageListener | None = None, *, size: RealSize | None = None,
        quality_check: QualityCheckMode = "review",
    ) -> Asset:
        """Mesh the photo on Triton, write the asset's files and check them against the photo under
        ``quality_check`` (``QUALITY_CHECK``); ``size`` overrides the default size.

        Raises:
            PermanentJobError: Triton refused the photo or a parameter.
            QualityRefused: under ``strict``, the files failed their check (at the next preset too, when
                that was tried).
            TransientJobError: Triton failed or is unavailable (``TritonUnavailable``).
            InvalidInput: the mesh cannot be written (no triangle with an area).
        """
        preset = self.resolved(preset)
        made = await self._made(image, preset, listener, size, check=quality_check != "off")
        retry = None
        finer = self.finer(preset)
        if quality_check in ("review", "strict") and made.measures is not None and worth_retrying(made.measures) \
                and finer is not None:
            retry = retry_report(preset.name, made.measures, made.details["timings_ms"])
            made = await self._made(image, finer, listener, size, check=True)
        quality = quality_report(quality_check, made.measures, unchecked=made.unchecked, retry=retry)
        refused = refusal(quality)
        if refused is not None:
            raise refused
        return Asset(files=made.files, details={**made.details, QUALITY_KEY: quality})

    def finer(self, preset: Preset) -> Preset | None:
        """The next preset, resolved, when its grid is finer than ``preset``'s (``MAX_RESOLUTION`` may
        cap both alike), else None."""
        following = next_preset(preset)
        if following is None or self.resolved(following).resolution <= preset.resolution:
            return None
        return self.resolved(following)

    async def _made(self, image: bytes, preset: Preset, listener: StageListener | None, size: RealSize | None,
                    *, check: bool) -> _Made:
        """One run of the ``preset`` (already resolved): Triton, the writers and, with ``check``, the check."""
        real_size = size or self.default_size
        timings: dict[str, float] = {}
        async with timed_stage(Stage.INFERENCE, timings, listener):
            mesh = await self.inference.image_to_mesh(
                image, resolution=preset.resolution, target_faces=preset.target_faces, texture_size=preset.texture_size
            )
        background_removal = await self.inference.background_removal()
        measures, unchecked = None, None
        async with timed_stage(Stage.ENCODING, timings, listener):
            prepared, files = await asyncio.to_thread(write_files, mesh, preset, real_size, timings)
            if check:
                measures, unchecked = await asyncio.to_thread(check_files, mesh, files, timings)
        model = next(file for file in files if file.role == MODEL_FILE)
        summary = glb.glb_summary(model.data)
        width, height, depth = (round(float(extent), 4) for extent in prepared.extent_m)
        details = {
            "preset": preset.name,
            "resolution": preset.resolution,
            "target_faces": preset.target_faces,
            "model_name": mesh.model_name,
            "model_version": mesh.model_version,
            "weights_version": mesh.weights_version,
            "background_removal": background_removal,
            "vertex_count": summary["vertex_count"],
            "face_count": summary["face_count"],
            "file_size_bytes": len(model.data),
            "file_sizes_bytes": {file.role: len(file.data) for file in files},
            "color_source": "texture" if prepared.textured else "vertex_colors",
            "texture": _texture_details(prepared, preset),
            "size": {"dimension": real_size.dimension, "metres": real_size.metres,
                     "source": "default" if size is None else "job"},
            "dimensions_m": {"width": width, "height": height, "depth": depth},
            "mesh_info": mesh.info,
            "timings_ms": timings,
        }
        return _Made(files, details, measures, unchecked)


PREPARE_STEP = "prepare"
"""The name under which ``write_files`` times the mesh preparation that every writer starts from."""


@dataclass(frozen=True)
class Writer:
    """One file of the asset and the function that writes it from the prepared mesh and the material."""

    role: str
    extension: str
    content_type: str
    write: Callable[[PreparedMesh, Material], bytes]


WRITERS: tuple[Writer, ...] = (
    Writer(MODEL_FILE, glb.EXTENSION, glb.CONTENT_TYPE, glb.write_glb),
    Writer(USDZ_FILE, usdz.EXTENSION, usdz.CONTENT_TYPE, usdz.write_usdz),
    Writer(POSTER_FILE, poster.EXTENSION, poster.CONTENT_TYPE, lambda mesh, _material: poster.render_poster(mesh)),
)
"""Every file of the asset, in the order they are written: the one list of the writing steps (the
benchmark ``bench.postprocess`` times these same steps)."""


def write_files(
    mesh: MeshResult, preset: Preset, size: RealSize, timings_ms: dict[str, float]
) -> tuple[PreparedMesh, tuple[AssetFile, ...]]:
    """Prepare the mesh once and write every file from it, timing each step (parts of ``encoding``)."""
    material = Material(texture_format=preset.texture_format)
    started = time.perf_counter()
    prepared = prepare_mesh(mesh.vertices, mesh.faces, mesh.vertex_colors, uvs=mesh.uvs, texture=mesh.texture,
                            size=size)
    timings_ms[PREPARE_STEP] = _ms_since(started)
    files = []
    for writer in WRITERS:
        started = time.perf_counter()
        files.append(AssetFile(writer.role, writer.extension, writer.content_type, writer.write(prepared, material)))
        timings_ms[writer.role] = _ms_since(started)
    return prepared, tuple(files)


def check_files(mesh: MeshResult, files: tuple[AssetFile, ...], timings_ms: dict[str, float]
                ) -> tuple[QualityMeasures | None, str | None]:
    """The check of the written files against the photo Triton framed (``QUALITY_TIMING`` of
    ``encoding``): the measures, or None and why there are none."""
    if mesh.framed_photo is None:
        return None, NO_FRAMED_PHOTO
    model = next(file for file in files if file.role == MODEL_FILE)
    started = time.perf_counter()
    try:
        low, high = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        return measure_quality(model.data, mesh.framed_photo, low, high), None
    except Unmeasurable as why:
        return None, str(why)
    finally:
        timings_ms[QUALITY_TIMING] = _ms_since(started)


def _texture_details(prepared: PreparedMesh, preset: Preset) -> dict[str, Any] | None:
    if prepared.texture is None:
        return None
    height, width, _ = prepared.texture.shape
    return {"width": width, "height": height, "format": preset.texture_format.value}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
