"""The worker process: N concurrent job loops plus heartbeat and maintenance, until SIGTERM.

Concurrency is asyncio: each of the `CONCURRENCY` loops claims a message, runs it and
acknowledges it, so several requests reach Triton at once and its dynamic batcher can combine
them. Background loops keep the heartbeat (and the leases of running jobs) alive, promote due
retries, recover dead workers' jobs, re-send undelivered webhooks and update the queue gauges.

When Triton goes away mid-run, the jobs that hit the outage are put back without using up an
attempt and all loops pause until the model is ready again, so an outage of any length delays
jobs but fails none. On SIGTERM/SIGINT the loops stop claiming, running jobs get
`SHUTDOWN_GRACE_S` to finish, and whatever is still running is handed back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from client_worker.config import Settings, instance_id
from client_worker.errors import TransientJobError
from client_worker.pipeline.inference import TritonMeshClient, TritonUnavailable
from client_worker.jobs.intake import Job, MalformedJob, RejectedMessage, TaskMessage, parse_job, parse_message
from client_worker.jobs.queue import JobQueue, Stage, backoff_delay
from client_worker.metrics import Metrics
from client_worker.processing import JobProcessor, StageFailure
from client_worker.status.webhook import StatusEvent, StatusReporter
from client_worker.storage import LocalStorage, Storage, SupabaseStorage

log = logging.getLogger(__name__)

CLAIM_TIMEOUT_S = 1.0
TRITON_WAIT_RETRY_S = 2.0


def both(*stages: Stage) -> Stage:
    """One stage running several (all inside the same transaction)."""

    def run(pipe: object) -> None:
        for stage in stages:
            stage(pipe)

    return run


def make_storage(settings: Settings) -> Storage:
    """The storage backend `STORAGE_BACKEND` names."""
    if settings.storage_backend == "local":
        return LocalStorage(settings.local_storage_dir or ".", settings.local_storage_public_url)
    assert settings.supabase_url and settings.supabase_service_role_key  # checked by storage_problem()
    return SupabaseStorage(
        settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        settings.supabase_bucket_name,
        cache_control_seconds=settings.storage_cache_control_s,
    )


class Worker:
    """One worker instance; `run()` returns after a stop request once everything is handed back."""

    def __init__(self, settings: Settings, *, storage: Storage | None = None) -> None:
        self.settings = settings
        self.instance = instance_id(settings.worker_name)
        self.metrics = Metrics()
        self.redis = Redis.from_url(settings.redis_url)
        self.http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self.queue = JobQueue(self.redis, settings, self.instance)
        self.reporter = StatusReporter(self.redis, settings, self.http, self.metrics)
        self.inference = TritonMeshClient(
            settings.triton_url,
            settings.triton_model_name,
            settings.triton_model_version,
            settings.triton_timeout_s,
            weights_version=settings.triton_weights_version,
        )
        self.storage = storage or make_storage(settings)
        self.processor = JobProcessor(
            settings, self.redis, self.inference, self.storage, self.reporter, self.metrics, self.http
        )
        self.stopping = asyncio.Event()
        self.triton_ready = asyncio.Event()
        self._triton_down = asyncio.Event()
        self._closing = asyncio.Event()
        self._releases: set[asyncio.Future[None]] = set()
        self._running: dict[str, bytes] = {}

    def request_stop(self) -> None:
        """Stop claiming; running jobs finish within the grace period (signal handlers call this)."""
        if not self.stopping.is_set():
            log.info("stop requested; finishing running jobs", extra={"running": len(self._running)})
            self.stopping.set()

    async def run(self) -> None:
        log.info("worker starting", extra={"instance": self.instance, "settings": self.settings.safe_summary()})
        metrics_server = self.metrics.serve(self.settings.metrics_port)
        try:
            await self.redis.ping()
            await self.inference.wait_ready(self.settings.triton_ready_timeout_s)
            self.triton_ready.set()
            await self.queue.register()
            background = [
                asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
                asyncio.create_task(self._every(self.settings.maintenance_interval_s, self._maintenance)),
                asyncio.create_task(self._watch_triton()),
            ]
            loops = [asyncio.create_task(self._job_loop()) for _ in range(self.settings.concurrency)]
            log.info("worker ready", extra={"instance": self.instance, "concurrency": self.settings.concurrency})
            await self.stopping.wait()
            _, unfinished = await asyncio.wait(loops, timeout=self.settings.shutdown_grace_s or None)
            for loop in unfinished:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await asyncio.gather(*self._releases, return_exceptions=True)  # before the sweep below
            handed_back = await self.queue.hand_back_all()
            await self.reporter.drain(self.settings.webhook_timeout_s)
            self._closing.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.queue.unregister()
            log.info("worker stopped", extra={"instance": self.instance, "handed_back": handed_back})
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            await self.inference.close()
            await self.http.aclose()
            await self.redis.aclose()
            close = getattr(self.storage, "aclose", None)
            if close is not None:
                await close()

    async def _job_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.triton_ready.is_set():
                await _first(self.triton_ready.wait(), self.stopping.wait())
                continue
            try:
                raw = await self.queue.claim(CLAIM_TIMEOUT_S)
            except (RedisError, OSError) as error:
                log.warning("Redis unreachable; retrying", extra={"error": str(error)})
                await asyncio.sleep(1.0)
                continue
            if raw is None:
                continue
            try:
                await self.handle(raw)
            except Exception:  # Redis went away mid-job, or a bug: never lose the message
                log.exception("error while handling a message; putting it back")
                await self._requeue(raw)

    async def _requeue(self, raw: bytes) -> None:
        for _ in range(30):
            try:
                await self.queue.requeue(raw)
                return
            except Exception as error:
                log.warning("cannot requeue yet", extra={"error": str(error)})
                await asyncio.sleep(1.0)

    async def handle(self, raw: bytes) -> None:
        """Everything that happens to one claimed message, ending in exactly one acknowledgement."""
        try:
            message = parse_message(raw, self.settings.task_name)
        except RejectedMessage as rejection:
            await self.queue.reject(raw, str(rejection))
            self.metrics.rejected.inc()
            log.warning("message rejected", extra={"reason": str(rejection), "list": self.settings.rejected_list})
            return
        if message.eta is not None and message.eta.timestamp() > time.time():
            await self.queue.defer(raw, message.eta.timestamp())
            self.metrics.jobs.labels("deferred").inc()
            return
        try:
            job = parse_job(message)
        except MalformedJob as malformed:
            await self._malformed(raw, malformed)
            return
        begin = await self.queue.begin(job.job_id)
        if begin.decision != "run":
            await self.queue.skip(raw)
            self.metrics.jobs.labels("duplicate").inc()
            log.info("duplicate delivery skipped",
                     extra={"job_id": job.job_id, "reason": begin.decision, "holder": begin.holder})
            return
        if _expired(message):
            await self._fail(raw, job.job_id, begin.attempt, "expired",
                             f"the job expired at {message.expires} before a worker could start it", "intake")
            return
        if begin.attempt > self.settings.max_attempts:
            await self._fail(raw, job.job_id, begin.attempt - 1, "exhausted",
                             f"gave up after {begin.attempt - 1} attempts: the earlier ones ended without a "
                             "result (the worker processing it stopped or crashed)", "intake")
            return
        await self._run(raw, job, begin.attempt)

    async def _run(self, raw: bytes, job: Job, attempt: int) -> None:
        self._running[job.job_id] = raw
        self.metrics.in_flight.inc()
        log.info("job started", extra={"job_id": job.job_id, "attempt": attempt})
        try:
            completed = await self.processor.run(job, attempt)
        except asyncio.CancelledError:
            release = asyncio.ensure_future(self.queue.release(raw, job.job_id))
            self._releases.add(release)
            await asyncio.shield(release)
            self.metrics.jobs.labels("handed_back").inc()
            log.info("job handed back at shutdown", extra={"job_id": job.job_id})
            raise
        except StageFailure as failure:
            await self._failed_attempt(raw, job.job_id, attempt, failure)
        else:
            event = StatusEvent(job.job_id, "completed", model_url=completed.model_url, metadata=completed.metadata)
            recorded = await self.queue.complete(
                raw, job.job_id, completed.model_url,
                both(self.reporter.stage(event), self.processor.forget_artifact(job.job_id)),
            )
            if not recorded:
                self._completed_elsewhere(job.job_id)
                return
            self.reporter.deliver_soon(job.job_id)
            self.metrics.jobs.labels("completed").inc()
            log.info("job completed", extra={"job_id": job.job_id, "model_url": completed.model_url,
                                             "timings_ms": completed.metadata.get("timings_ms")})
        finally:
            self._running.pop(job.job_id, None)
            self.metrics.in_flight.dec()

    async def _failed_attempt(self, raw: bytes, job_id: str, attempt: int, failure: StageFailure) -> None:
        error = failure.error
        if isinstance(error, TritonUnavailable):
            self.triton_ready.clear()
            self._triton_down.set()
            await self._retry(raw, job_id, attempt, failure, TRITON_WAIT_RETRY_S, counted=False)
        elif isinstance(error, TransientJobError) and attempt < self.settings.max_attempts:
            delay = backoff_delay(attempt, self.settings.retry_base_delay_s, self.settings.retry_max_delay_s)
            await self._retry(raw, job_id, attempt, failure, delay, counted=True)
        else:
            kind = "exhausted" if isinstance(error, TransientJobError) else "permanent"
            message = str(error)
            if kind == "exhausted":
                message = f"gave up after {attempt} attempts; last error: {message}"
            await self._fail(raw, job_id, attempt, kind, message, failure.stage)

    async def _retry(self, raw: bytes, job_id: str, attempt: int, failure: StageFailure, delay: float,
                     *, counted: bool) -> None:
        metadata = {"stage": "retry_scheduled", "failed_stage": failure.stage, "attempt": attempt,
                    "retry_in_s": round(delay, 1), "last_error": str(failure.error)}
        event = StatusEvent(job_id, "processing", metadata=metadata)
        if not await self.queue.retry(raw, job_id, delay, self.reporter.stage(event), counted=counted):
            self._completed_elsewhere(job_id)
            return
        self.reporter.deliver_soon(job_id)
        self.metrics.jobs.labels("retried").inc()
        self.metrics.retries.labels(failure.stage).inc()
        log.warning("job will be retried", extra={"job_id": job_id, **metadata, "counted": counted})

    async def _fail(self, raw: bytes, job_id: str, attempts: int, kind: str, message: str, stage: str) -> None:
        event = StatusEvent(job_id, "failed", error_message=message,
                            metadata={"attempts": attempts, "stage": stage, "kind": kind})
        if not await self.queue.fail(raw, job_id, message, attempts, self.reporter.stage(event)):
            self._completed_elsewhere(job_id)
            return
        self.reporter.deliver_soon(job_id)
        self.metrics.jobs.labels("failed").inc()
        log.error("job failed", extra={"job_id": job_id, "kind": kind, "stage": stage, "error": message})

    def _completed_elsewhere(self, job_id: str) -> None:
        self.metrics.jobs.labels("duplicate").inc()
        log.warning("job was completed by another worker meanwhile; this run's result is dropped",
                    extra={"job_id": job_id})

    async def _malformed(self, raw: bytes, malformed: MalformedJob) -> None:
        """A job we cannot run: failed if it names a job id (so the backend hears of it), else rejected."""
        if malformed.job_id is None:
            await self.queue.reject(raw, str(malformed))
            self.metrics.rejected.inc()
            log.error("job without a job_id rejected", extra={"reason": str(malformed)})
            return
        begin = await self.queue.begin(malformed.job_id)
        if begin.decision != "run":
            await self.queue.skip(raw)
            return
        await self._fail(raw, malformed.job_id, begin.attempt, "permanent", str(malformed), "intake")

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(list(self._running))

    async def _maintenance(self) -> None:
        await self.queue.promote_due()
        for instance, count in (await self.queue.recover_dead_workers()).items():
            self.metrics.recovered.inc(count)
            log.warning("recovered the jobs of a dead worker", extra={"dead_worker": instance, "jobs": count})
        await self.reporter.redeliver_due()
        for name, depth in (await self.queue.depths()).items():
            self.metrics.queue_depth.labels(name).set(depth)

    async def _watch_triton(self) -> None:
        """While Triton is marked unavailable, poll its readiness and reopen the job loops."""
        while not self._closing.is_set():
            await _first(self._triton_down.wait(), self._closing.wait())
            if self._closing.is_set():
                return
            reason = await self.inference.readiness()
            if reason is None:
                log.info("Triton is ready again; resuming jobs")
                self._triton_down.clear()
                self.triton_ready.set()
            else:
                log.warning("waiting for Triton", extra={"reason": reason})
                await self._pause(1.0)

    async def _every(self, interval_s: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` periodically until shutdown.

        The loop ends on the `_closing` flag rather than on cancellation alone: redis-py can turn
        a cancellation that lands inside a command into a connection error, which the
        `except` below would otherwise swallow, leaving the loop running forever.
        """
        while not self._closing.is_set():
            try:
                await action()
            except Exception:  # a Redis blip must not end the heartbeat or maintenance loop
                log.exception("background task failed", extra={"task": action.__name__})
            await self._pause(interval_s)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the worker is closing."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


def _expired(message: TaskMessage) -> bool:
    return message.expires is not None and message.expires < datetime.now(timezone.utc)


async def _first(*waits: Awaitable[object]) -> None:
    """Return when the first of several waits finishes; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    with contextlib.suppress(asyncio.CancelledError):
        await worker.run()
