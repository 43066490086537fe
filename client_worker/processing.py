"""One attempt of a queued job: download → pipeline core → upload, with progress and failure kinds.

The pipeline core (``client_worker.pipeline.asset``) makes the files; this module adds what only
a queued job has: its image URLs, its progress webhooks, and storage. The expensive results
survive a failed attempt: the finished files (and, once uploaded, their URLs) are cached in Redis
under the job id, so a retry after a storage outage uploads the same bytes again instead of
re-running the model, and a retry after a crash following the uploads does not upload at all.
The cache is removed when the job is acknowledged as completed. A Redis error is not a failure of
the job: it propagates to the router, which gives the attempt back. The whole attempt has a
deadline (``JOB_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from asset.real_size import RealSize
from client_worker.config import Settings
from client_worker.download import DownloadLimits, download_first_image
from client_worker.errors import JobError, PermanentJobError, TransientJobError
from client_worker.jobs.intake import Job
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import Writes
from client_worker.metrics import Metrics
from client_worker.pipeline.asset import MODEL_FILE, Asset, AssetFile, AssetPipeline, timed_stage
from client_worker.pipeline.job_size import size_from_metadata
from client_worker.pipeline.presets import Preset, resolve_preset
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender
from client_worker.storage import Storage, storage_stem
from img2mesh.errors import InvalidInput

log = logging.getLogger(__name__)

ARTIFACT_TTL_S = 24 * 3600

PROGRESS = {"downloading": 5, "inference": 20, "encoding": 75, "uploading": 90}
"""Percent reported when each stage starts (inference dominates the time)."""

_STAGE_OF_STEP = {"download": "downloading", "inference": "inference", "encoding": "encoding", "upload": "uploading"}
"""The stage a job is in while a step runs: steps name the timings, stages the progress webhooks."""


class StageFailure(Exception):
    """A job error together with the stage it happened in; `error` is permanent or transient."""

    def __init__(self, stage: str, error: JobError) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error


@dataclass
class Completed:
    """What a successful attempt produced: the model's public URL and the webhook's completion metadata."""

    model_url: str
    metadata: dict[str, Any]


@dataclass
class _Attempt:
    """One attempt of a job: its current stage (for the failure report) and step timings.

    It is the pipeline core's stage listener: each step start is reported to the backend as
    progress, each step's duration goes to the metrics.
    """

    processor: JobProcessor
    job: Job
    attempt: int
    token: str
    stage: str = "intake"
    ms: dict[str, float] = field(default_factory=dict)

    async def started(self, step: str) -> None:
        self.stage = _STAGE_OF_STEP[step]
        metadata = {"stage": self.stage, "progress": PROGRESS[self.stage], "attempt": self.attempt}
        await self.processor.report(StatusEvent(self.job.job_id, "processing", metadata=metadata), self.token)

    def finished(self, step: str, seconds: float) -> None:
        self.processor.metrics.stage_seconds.labels(step).observe(seconds)


class JobProcessor:
    """Runs jobs; shared by all concurrent jobs of a worker (it holds no per-job state)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        pipeline: AssetPipeline,
        storage: Storage,
        status: StatusStore,
        webhooks: WebhookSender,
        metrics: Metrics,
        http: httpx.AsyncClient,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pipeline = pipeline
        self.storage = storage
        self.status = status
        self.webhooks = webhooks
        self.metrics = metrics
        self.http = http
        self.keys = RedisKeys(settings.key_prefix)
        self.download_limits = DownloadLimits.from_settings(settings)

    async def report(self, event: StatusEvent, token: str) -> None:
        """Record a progress event of run ``token`` and deliver it in the background (the job does
        not wait for the backend)."""
        if await self.status.record(event, token):
            self.webhooks.deliver_soon(event.job_id)

    async def uploaded(self, job_id: str) -> bool:
        """True when an earlier attempt uploaded every file of the job: only its completion is missing."""
        cached = _text_keys(await self.redis.hgetall(self.keys.artifact(job_id)))
        if "files" not in cached:
            return False
        return all(f"url:{spec['role']}" in cached for spec in json.loads(cached["files"]))

    def forget_artifact(self, job_id: str) -> Writes:
        """Writes for the completion transaction: drop the job's cached files."""
        key = self.keys.artifact(job_id)
        return lambda pipe: pipe.delete(key)

    async def process(self, job: Job, attempt: int, token: str) -> Completed:
        """Process one attempt (run ``token``); raises `StageFailure` naming the stage and the kind
        of failure, or `RedisError` when Redis is unreachable."""
        started = time.perf_counter()
        run = _Attempt(self, job, attempt, token)
        deadline = asyncio.timeout(self.settings.job_timeout_s)
        try:
            async with deadline:
                completed = await self._process(run)
        except JobError as error:
            raise StageFailure(run.stage, error) from error
        except InvalidInput as error:
            raise StageFailure(run.stage, PermanentJobError(str(error))) from error
        except RedisError:
            raise
        except Exception as error:  # a bug or an unmapped library error: retry; the log has the details
            if isinstance(error, TimeoutError) and deadline.expired():
                message = (f"the job did not finish within {self.settings.job_timeout_s:g} s (JOB_TIMEOUT_S) "
                           f"and stopped at the {run.stage} stage")
            else:
                log.exception("unexpected error", extra={"job_id": job.job_id, "stage": run.stage})
                message = f"an internal error of the worker stopped the job at the {run.stage} stage"
            raise StageFailure(run.stage, TransientJobError(message)) from error
        completed.metadata["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 1)
        return completed

    async def _process(self, run: _Attempt) -> Completed:
        job = run.job
        preset = resolve_preset({"quality": job.quality, "metadata": job.metadata}, self.settings.default_preset)
        size = size_from_metadata(job.metadata)
        stem = storage_stem(job.shop, job.product_id, job.variant_id, job.job_id)  # bad ids fail before any work
        artifact = self.keys.artifact(job.job_id)
        cached = await self.redis.hgetall(artifact)
        if cached:
            asset = _cached_asset(cached)
            log.info("reusing the files of an earlier attempt", extra={"job_id": job.job_id, "attempt": run.attempt})
        else:
            asset = await self._make_asset(run, preset, size)
        urls = {name[len("url:"):]: url.decode() for name, url in _text_keys(cached).items() if name.startswith("url:")}
        pending = [file for file in asset.files if file.role not in urls]
        if pending:
            async with timed_stage("upload", run.ms, run):
                for file in pending:
                    urls[file.role] = await self.storage.upload(stem + file.extension, file.data, file.content_type)
                    await self.redis.hset(artifact, f"url:{file.role}", urls[file.role])
        details = asset.details
        other_urls = {f"{role}_url": url for role, url in urls.items() if role != MODEL_FILE}
        metadata = {**details, **other_urls, "attempts": run.attempt,
                    "timings_ms": {**details["timings_ms"], **run.ms}}
        return Completed(model_url=urls[MODEL_FILE], metadata=metadata)

    async def _make_asset(self, run: _Attempt, preset: Preset, size: RealSize | None) -> Asset:
        async with timed_stage("download", run.ms, run):
            image = await download_first_image(run.job.image_urls, self.download_limits, self.http)
        made = await self.pipeline.make(image.data, preset, run, size=size)
        asset = Asset(made.files, {**made.details, "image_url": image.url,
                                   "timings_ms": {**run.ms, **made.details["timings_ms"]}})
        artifact = self.keys.artifact(run.job.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            _cache_asset(pipe, artifact, asset)
            pipe.expire(artifact, ARTIFACT_TTL_S)
            await pipe.execute()
        return asset


def _cache_asset(pipe: Pipeline, key: str, asset: Asset) -> None:
    """Store the asset's files and details in the job's artifact hash (inside ``pipe``)."""
    files = [{"role": f.role, "extension": f.extension, "content_type": f.content_type} for f in asset.files]
    mapping: dict[str, bytes | str] = {"details": json.dumps(asset.details), "files": json.dumps(files)}
    mapping.update({f"file:{f.role}": f.data for f in asset.files})
    pipe.hset(key, mapping=mapping)


def _cached_asset(cached: dict[bytes, bytes]) -> Asset:
    fields = _text_keys(cached)
    files = tuple(
        AssetFile(spec["role"], spec["extension"], spec["content_type"], fields[f"file:{spec['role']}"])
        for spec in json.loads(fields["files"])
    )
    return Asset(files, json.loads(fields["details"]))


def _text_keys(cached: dict[bytes, bytes]) -> dict[str, bytes]:
    return {key.decode(): value for key, value in cached.items()}
