"""One job end to end: download → Triton → GLB → upload, with progress, timings and failure kinds.

The expensive results survive a failed attempt: the finished GLB (and, once uploaded, its URL)
is cached in Redis under the job id, so a retry after a storage outage uploads the same bytes
again instead of re-running the model, and a retry after a crash following the upload does not
upload at all. The cache is removed when the job is acknowledged as completed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis

from client_worker.config import Settings
from client_worker.download import download_first_image
from client_worker.errors import JobError, PermanentJobError, TransientJobError
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.jobs.intake import Job
from client_worker.jobs.queue import Stage
from client_worker.metrics import Metrics
from client_worker.pipeline.presets import Preset, resolve_preset
from client_worker.status.webhook import StatusEvent, StatusReporter
from client_worker.storage import Storage, storage_key
from img2mesh.errors import InvalidInput
from asset.glb import glb_summary, mesh_to_glb

log = logging.getLogger(__name__)

ARTIFACT_TTL_S = 24 * 3600

PROGRESS = {"downloading": 5, "inference": 20, "encoding": 75, "uploading": 90}
"""Percent reported when each stage starts (inference dominates the time)."""


class StageFailure(Exception):
    """A job error together with the stage it happened in; `error` is permanent or transient."""

    def __init__(self, stage: str, error: JobError) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error


@dataclass
class Completed:
    """What a successful run produced: the public URL and the webhook's completion metadata."""

    model_url: str
    metadata: dict[str, Any]


@dataclass
class _Run:
    """Where one attempt is: its current stage (for the failure report) and stage timings."""

    job: Job
    attempt: int
    stage: str = "intake"
    ms: dict[str, float] = field(default_factory=dict)


class JobProcessor:
    """Runs jobs; shared by all concurrent jobs of a worker (it holds no per-job state)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        inference: TritonMeshClient,
        storage: Storage,
        reporter: StatusReporter,
        metrics: Metrics,
        http: httpx.AsyncClient,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.inference = inference
        self.storage = storage
        self.reporter = reporter
        self.metrics = metrics
        self.http = http
        self.keys = settings.redis_keys()

    def forget_artifact(self, job_id: str) -> Stage:
        """A stage for the completion transaction: drop the job's cached GLB."""
        key = self.keys.artifact(job_id)
        return lambda pipe: pipe.delete(key)

    async def run(self, job: Job, attempt: int) -> Completed:
        """Process one job; raises `StageFailure` naming the stage and the kind of failure."""
        started = time.perf_counter()
        run = _Run(job, attempt)
        try:
            completed = await self._run(run)
        except JobError as error:
            raise StageFailure(run.stage, error) from error
        except InvalidInput as error:
            raise StageFailure(run.stage, PermanentJobError(str(error))) from error
        except Exception as error:  # a bug or an unmapped library error: retry, and say what it was
            log.exception("unexpected error", extra={"job_id": job.job_id, "stage": run.stage})
            message = f"internal error during {run.stage}: {type(error).__name__}: {error}"
            raise StageFailure(run.stage, TransientJobError(message)) from error
        completed.metadata["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 1)
        return completed

    async def _run(self, run: _Run) -> Completed:
        job = run.job
        preset = resolve_preset({"quality": job.quality, "metadata": job.metadata}, self.settings.default_preset)
        key = storage_key(job.shop, job.product_id, job.variant_id, job.job_id)  # bad ids fail before any work
        cached = await self.redis.hgetall(self.keys.artifact(job.job_id))
        if cached:
            glb = cached[b"glb"]
            details = json.loads(cached[b"details"])
            log.info("reusing the GLB of an earlier attempt", extra={"job_id": job.job_id, "attempt": run.attempt})
        else:
            glb, details = await self._make_glb(run, preset)
        model_url = cached.get(b"model_url", b"").decode()
        if not model_url:
            await self._enter(run, "uploading")
            with self._timed(run, "upload"):
                model_url = await self.storage.upload(key, glb)
            await self.redis.hset(self.keys.artifact(job.job_id), "model_url", model_url)
        metadata = {**details, "attempts": run.attempt, "timings_ms": {**details["timings_ms"], **run.ms}}
        return Completed(model_url=model_url, metadata=metadata)

    async def _make_glb(self, run: _Run, preset: Preset) -> tuple[bytes, dict[str, Any]]:
        resolution = min(preset.resolution, self.settings.max_resolution)
        await self._enter(run, "downloading")
        with self._timed(run, "download"):
            image = await download_first_image(run.job.image_urls, self.settings.download_limits(), self.http)
        await self._enter(run, "inference")
        with self._timed(run, "inference"):
            mesh = await self.inference.image_to_mesh(image.data, resolution=resolution)
        await self._enter(run, "encoding")
        with self._timed(run, "encoding"):
            glb = await asyncio.to_thread(
                mesh_to_glb, mesh.vertices, mesh.faces, mesh.vertex_colors, target_faces=preset.target_faces
            )
        summary = glb_summary(glb)
        details = {
            "preset": preset.name,
            "resolution": resolution,
            "target_faces": preset.target_faces,
            "model_name": mesh.model_name,
            "model_version": mesh.model_version,
            "weights_version": mesh.weights_version,
            "vertex_count": summary["vertex_count"],
            "face_count": summary["face_count"],
            "file_size_bytes": len(glb),
            "image_url": image.url,
            "mesh_info": mesh.info,
            "timings_ms": dict(run.ms),
        }
        artifact = self.keys.artifact(run.job.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(artifact, mapping={"glb": glb, "details": json.dumps(details)})
            pipe.expire(artifact, ARTIFACT_TTL_S)
            await pipe.execute()
        return glb, details

    async def _enter(self, run: _Run, stage: str) -> None:
        """Start a stage: remember it for failure reports and tell the backend."""
        run.stage = stage
        metadata = {"stage": stage, "progress": PROGRESS[stage], "attempt": run.attempt}
        await self.reporter.report(StatusEvent(run.job.job_id, "processing", metadata=metadata))

    @contextmanager
    def _timed(self, run: _Run, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            run.ms[name] = round(elapsed * 1000, 1)
            self.metrics.stage_seconds.labels(name).observe(elapsed)
