"""One attempt of a job: download → pipeline core → upload, with progress and failure kinds.

The pipeline core (``client_worker.pipeline.photo_to_asset``) makes the files; this module adds what only
a job has: its image URLs, its progress reports, and storage. It knows nothing of where jobs come
from: it reports progress and keeps what it made through `AttemptRecords`, which the job source
implements (the Redis queue's is ``client_worker.attempt_records``). The expensive results survive
a failed attempt: the finished files, and each URL once uploaded, are kept there, so a retry after
a storage outage uploads the same bytes again instead of re-running the model, and a retry after a
crash following the uploads does not upload at all. Before a file is stored (uploaded, or copied
from the asset cache) its key is noted there too, so that a job that ends failed leaves no file
behind (the job source removes them, ``client_worker.attempt_records``). The photo is the best of the job's candidates
(``client_worker.photo_choice``). A photo whose asset was already made (same
content address: ``client_worker.asset_cache``) gets copies of those files instead of a model run,
and an asset this job made is offered to later jobs once stored; jobs of one address that run at
the same time wait for the first one's asset instead of running the model too. An error of the source itself
(``source_errors``, e.g. Redis unreachable) is not a failure of the job: it propagates to the
caller, which gives the attempt back. The whole attempt has a deadline (``JOB_TIMEOUT_S``). The
files check themselves against the photo under the job's ``quality_check_mode`` or ``QUALITY_CHECK``
(docs/quality-check.md); copies of a cached asset are judged again under this job's mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Protocol

from client_worker.asset_cache import CACHE, AssetCache, AssetReuse, Flight
from client_worker.config import Settings
from client_worker.errors import JobError, PermanentJobError, TransientJobError
from client_worker.jobs.job import Job
from client_worker.metrics import Metrics
from client_worker.photo_choice import PhotoChoice, PhotoRefused
from client_worker.pipeline.photo_to_asset import MODEL_FILE, Asset, AssetPipeline, timed_stage
from client_worker.pipeline.presets import Preset, get_preset
from client_worker.pipeline.quality_check import QUALITY_KEY, QualityRefused, refusal, rejudged
from client_worker.pipeline.stages import PROGRESS, Stage
from client_worker.storage import Storage, storage_stem
from img2mesh.errors import InvalidInput

log = logging.getLogger(__name__)


class StageFailure(Exception):
    """A job error together with the stage it happened in; `error` is permanent or transient.

    `details` is what the failed webhook's metadata reports besides (the photo choice's report)."""

    def __init__(self, stage: Stage, error: JobError, details: dict[str, Any] | None = None) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error
        self.details = details or {}


@dataclass(frozen=True)
class KeptFiles:
    """What an earlier attempt of the job made, and the URL of each file it uploaded (by role)."""

    asset: Asset
    urls: dict[str, str]


class AttemptRecords(Protocol):
    """What processing needs from the source of its jobs. ``token`` names the attempt's run."""

    async def progress(self, job_id: str, token: str, metadata: dict[str, Any]) -> None:
        """Report that the run has reached a stage (the backend hears it as a `processing` status)."""

    async def kept(self, job_id: str) -> KeptFiles | None:
        """The files an earlier attempt kept, or None."""

    async def keep(self, job_id: str, asset: Asset) -> None:
        """Keep the files just made, for the job's later attempts."""

    async def keep_url(self, job_id: str, role: str, url: str) -> None:
        """Keep the URL of one uploaded file."""

    async def storing(self, job_id: str, keys: Sequence[str]) -> None:
        """Note, before any of them is written (uploaded or copied), the storage keys that will hold
        the job's files: a job that ends failed has them removed, so it leaves no files behind."""


@dataclass
class Completed:
    """What a successful attempt produced: the model's public URL and the webhook's completion metadata."""

    model_url: str
    metadata: dict[str, Any]


@dataclass
class _Attempt:
    """One attempt of a job: its current stage (for the failure report) and stage timings.

    It is the pipeline core's stage listener: each stage's start is reported to the backend as
    progress, its duration goes to the metrics.
    """

    processor: JobProcessor
    job: Job
    attempt: int
    token: str
    stage: Stage = Stage.INTAKE
    ms: dict[str, float] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    """What the failed webhook reports besides: the photo choice's report once there is one, and the
    quality check's when it refused the asset."""

    async def started(self, stage: Stage) -> None:
        self.stage = stage
        metadata = {"stage": self.stage, "progress": PROGRESS[self.stage], "attempt": self.attempt}
        await self.processor.records.progress(self.job.job_id, self.token, metadata)

    def finished(self, stage: Stage, seconds: float) -> None:
        self.processor.metrics.stage_seconds.labels(stage).observe(seconds)

    def refused(self, refused: QualityRefused) -> QualityRefused:
        """``refused`` (the check's verdict under ``strict``), its report kept for the failed webhook."""
        self.reported = {**self.reported, **refused.report}
        return refused


class JobProcessor:
    """Runs jobs; shared by all concurrent jobs of a worker (it holds no per-job state)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: AssetPipeline,
        photo_choice: PhotoChoice,
        storage: Storage,
        records: AttemptRecords,
        cache: AssetCache,
        metrics: Metrics,
        source_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.photo_choice = photo_choice
        self.storage = storage
        self.records = records
        self.metrics = metrics
        self.source_errors = source_errors
        self.reuse = AssetReuse(cache, storage, metrics, enabled=settings.asset_cache_ttl_s > 0)

    async def process(self, job: Job, attempt: int, token: str) -> Completed:
        """Process one attempt (run ``token``); raises `StageFailure` naming the stage and the kind
        of failure, or one of ``source_errors`` when the job source failed."""
        started = time.perf_counter()
        run = _Attempt(self, job, attempt, token)
        deadline = asyncio.timeout(self.settings.job_timeout_s)
        try:
            async with deadline, self.reuse.flight(job.job_id) as flight:
                completed = await self._process(run, flight)
        except JobError as error:
            raise StageFailure(run.stage, error, run.reported) from error
        except InvalidInput as error:
            raise StageFailure(run.stage, PermanentJobError(str(error)), run.reported) from error
        except self.source_errors:
            raise
        except Exception as error:  # a bug or an unmapped library error: retry; the log has the details
            if isinstance(error, TimeoutError) and deadline.expired():
                message = (f"the job did not finish within {self.settings.job_timeout_s:g} s (JOB_TIMEOUT_S) "
                           f"and stopped at the {run.stage} stage")
            else:
                log.exception("unexpected error", extra={"job_id": job.job_id, "stage": run.stage})
                message = f"an internal error of the worker stopped the job at the {run.stage} stage"
            raise StageFailure(run.stage, TransientJobError(message), run.reported) from error
        completed.metadata["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 1)
        return completed

    async def _process(self, run: _Attempt, flight: Flight) -> Completed:
        job = run.job
        preset = job.requested_preset or get_preset(self.settings.default_preset)
        stem = storage_stem(job.shop, job.product_id, job.variant_id, job.job_id)  # bad ids fail before any work
        kept = await self.records.kept(job.job_id)
        if kept is not None:
            asset, urls = kept.asset, dict(kept.urls)
            log.info("reusing the files of an earlier attempt", extra={"job_id": job.job_id, "attempt": run.attempt})
        else:
            asset, urls = await self._make_asset(run, preset, stem, flight)
        pending = [file for file in asset.files if file.role not in urls]
        if pending:
            await self.records.storing(job.job_id, [stem + file.extension for file in pending])
            async with timed_stage(Stage.UPLOAD, run.ms, run):
                for file in pending:
                    urls[file.role] = await self.storage.upload(stem + file.extension, file.data, file.content_type)
                    await self.records.keep_url(job.job_id, file.role, urls[file.role])
        await self.reuse.remember(asset, stem, job.job_id)
        details = asset.details
        other_urls = {f"{role}_url": url for role, url in urls.items() if role != MODEL_FILE}
        metadata = {**details, **other_urls, "attempts": run.attempt,
                    "timings_ms": {**details["timings_ms"], **run.ms}}
        return Completed(model_url=urls[MODEL_FILE], metadata=metadata)

    async def _make_asset(self, run: _Attempt, preset: Preset, stem: str,
                          flight: Flight) -> tuple[Asset, dict[str, str]]:
        """The job's asset and the URLs of its files stored so far: copies of a cached asset's files
        (then the asset holds no files, all are stored), or files just made (none stored yet)."""
        try:
            photo = await self.photo_choice.choose(run.job.image_urls, run, run.ms, run.job.photo_check_mode)
        except PhotoRefused as refused:
            run.reported = refused.report
            raise
        run.reported = photo.report
        chosen = {"image_url": photo.url, **photo.report}
        mode = run.job.quality_check_mode or self.settings.quality_check
        cache: dict[str, Any] = {}
        if self.reuse.enabled:  # the address asks Triton for its model versions: not when the cache is off
            address = await self.pipeline.address(photo.data, preset, size=run.job.real_size)

            def vet(cached: dict[str, Any]) -> None:
                """Refuse, before copying, files this job's own mode would refuse (``strict``)."""
                refused = refusal(rejudged(cached.get(QUALITY_KEY), mode))
                if refused is not None:
                    raise run.refused(refused)

            copies = await flight.copies(address, stem, run.ms, run,
                                         storing=lambda keys: self.records.storing(run.job.job_id, keys), vet=vet)
            if copies is not None:
                quality = rejudged(copies.details.get(QUALITY_KEY), mode)
                details = {**copies.details, QUALITY_KEY: quality, **chosen, "timings_ms": dict(run.ms)}
                return Asset((), details), copies.urls
            cache = {CACHE: self.reuse.made(address)}
        try:
            made = await self.pipeline.make(photo.data, preset, run, size=run.job.real_size, quality_check=mode)
        except QualityRefused as refused:
            self.metrics.observe_quality(refused.report[QUALITY_KEY])
            raise run.refused(refused) from None
        self.metrics.observe_quality(made.details[QUALITY_KEY])
        asset = Asset(made.files, {**made.details, **chosen, **cache,
                                   "timings_ms": {**run.ms, **made.details["timings_ms"]}})
        await self.records.keep(run.job.job_id, asset)
        return asset, {}
