"""The worker process's lifecycle: N concurrent job loops plus heartbeat and maintenance, until SIGTERM.

Concurrency is asyncio: each of the `CONCURRENCY` loops claims a message and hands it to the
consumer (``client_worker.consumer``), so several requests reach Triton at once and its dynamic
batcher can combine them. Background loops keep the heartbeat (and the leases of running jobs)
alive, promote due retries, recover dead workers' jobs, remove the files of failed jobs and update
the queue gauges; the webhook outbox has a loop of its own (``status.webhook``), which drains at
once when the backend answers again after an outage.

When Triton goes away mid-run, the consumer's retry policy puts the affected jobs back without
using up an attempt and tells this module, which pauses all loops until the model is ready again.
On SIGTERM/SIGINT the loops stop claiming, running jobs get `SHUTDOWN_GRACE_S` to finish, and
whatever is still running is handed back to the queue.

The Redis client never resends a command on its own (redis-py would by default): a resent LMOVE
or admission whose first reply was lost would act twice. The worker's steps are idempotent
instead and repeated as a whole (``consumer``), and when Redis restarted, or a claim's reply was
lost, the worker hands back whatever sits unclaimed in its processing list (``jobs.queue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

import httpx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from wsgiref.simple_server import WSGIServer

from asset.real_size import RealSize
from client_worker.attempt_records import RedisAttemptRecords
from client_worker.backoff import Backoff
from client_worker.config import Settings
from client_worker.errors import JobError
from client_worker.jobs.celery_canvas import CeleryCanvas
from client_worker.jobs.queue import JobQueue, instance_id
from client_worker.logs import OutageLog
from client_worker.metrics import Metrics
from client_worker.pipeline.photo_to_asset import AssetPipeline
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.photo_choice import PhotoChoice
from client_worker.processing import JobProcessor
from client_worker.redaction import Redaction, loggable_settings
from client_worker.redis_asset_cache import RedisAssetCache
from client_worker.retry_policy import RetryPolicy
from client_worker.consumer import Consumer
from client_worker.status.celery_results import CeleryResults
from client_worker.status.store import StatusStore
from client_worker.status.webhook import WebhookSender
from client_worker.startup import StartupError, redis_problem
from client_worker.storage import Storage, make_storage

log = logging.getLogger(__name__)

CLAIM_TIMEOUT_S = 1.0


class Worker:
    """One worker instance; `run()` returns after a stop request once everything is handed back."""

    def __init__(self, settings: Settings, *, storage: Storage | None = None) -> None:
        self.settings = settings
        self.instance = instance_id(settings.worker_name)
        self.metrics = Metrics()
        self.redis = Redis.from_url(
            settings.redis_url, retry=Retry(NoBackoff(), 0),
            socket_timeout=settings.redis_timeout_s, socket_connect_timeout=settings.redis_timeout_s,
        )
        self.http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self.queue = JobQueue(self.redis, settings, self.instance)
        self.webhooks = WebhookSender(self.redis, settings, self.http, self.metrics)
        self.status = StatusStore(self.redis, self.queue.keys, settings.status_ttl_s, self.webhooks.delivery_window_s,
                                  settings.status_text_max_chars, Redaction.of(settings))
        backend = Redis.from_url(settings.result_backend_url) if settings.result_backend_url else None
        self.results = CeleryResults(self.redis, self.queue.keys, backend, settings.result_expires_s)
        canvas = CeleryCanvas(self.queue.priorities, settings.queue_name)
        self._redis_run_id: str | None = None
        self._stranded_lists: set[str] = set()
        self.inference = TritonMeshClient.from_settings(settings)
        self.storage = storage or make_storage(settings)
        pipeline = AssetPipeline(self.inference, max_resolution=settings.max_resolution,
                                 default_size=RealSize(settings.default_largest_side_m))
        self.records = RedisAttemptRecords(self.redis, self.queue, self.status, self.webhooks, self.storage)
        cache = RedisAssetCache(self.redis, self.queue.keys, settings.asset_cache_ttl_s)
        self.photo_choice = PhotoChoice.from_settings(settings, self.inference, self.http)
        processor = JobProcessor(settings, pipeline, self.photo_choice, self.storage, self.records, cache, self.metrics,
                                 source_errors=(RedisError,))
        retries = RetryPolicy(settings.max_attempts, Backoff(settings.retry_base_delay_s, settings.retry_max_delay_s))
        self.consumer = Consumer(
            settings, self.queue, processor, self.records, self.status, self.webhooks, self.results, canvas, retries,
            self.metrics, self._triton_unavailable,
        )
        self.stopping = asyncio.Event()
        self.triton_ready = asyncio.Event()
        self.background_removal: dict[str, object] = {}
        """The U²-Net Triton serves at start (``TritonMeshClient.background_removal``), for the ready log."""
        self._triton_down = asyncio.Event()
        self._closing = asyncio.Event()

    def request_stop(self) -> None:
        """Stop claiming; running jobs finish within the grace period (signal handlers call this)."""
        if not self.stopping.is_set():
            log.info("stop requested; finishing running jobs", extra={"running": len(self.consumer.running)})
            self.stopping.set()

    async def run(self) -> None:
        """Run until a stop request; raises `StartupError` when a dependency fails at start (``startup``)."""
        log.info("worker starting", extra={"instance": self.instance, "settings": loggable_settings(self.settings)})
        metrics_server = None
        try:
            metrics_server = self._serve_metrics()
            await self._check_dependencies()
            self.triton_ready.set()
            background = [
                asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
                asyncio.create_task(self._every(self.settings.maintenance_interval_s, self._maintenance)),
                asyncio.create_task(self._watch_triton()),
                asyncio.create_task(self.webhooks.keep_delivering(self._closing)),
            ]
            loops = [asyncio.create_task(self._job_loop()) for _ in range(self.settings.concurrency)]
            log.info("worker ready", extra={"instance": self.instance, "concurrency": self.settings.concurrency,
                                            "queues": self.queue.sources,
                                            "background_removal": self.background_removal})
            await self.stopping.wait()
            _, unfinished = await asyncio.wait(loops, timeout=self.settings.shutdown_grace_s or None)
            for loop in unfinished:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.consumer.settle_hand_backs()  # before the sweep below
            handed_back = await self.queue.hand_back_all()
            await self.webhooks.drain(self.settings.webhook_timeout_s)
            await self.results.drain(self.settings.webhook_timeout_s)
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
            await self.results.close()
            close = getattr(self.storage, "aclose", None)
            if close is not None:
                await close()

    def _serve_metrics(self) -> WSGIServer | None:
        try:
            return self.metrics.serve(self.settings.metrics_port)
        except OSError as error:
            raise StartupError(f"cannot serve metrics on port {self.settings.metrics_port} (METRICS_PORT): "
                               f"{error.strerror or error}: choose a free port, or 0 for no metrics") from None

    async def _check_dependencies(self) -> None:
        """Redis, the result backend and Triton's models, each named in one line when it fails."""
        settings = self.settings
        redis_steps = [("REDIS_URL", settings.redis_url, self.redis.ping)]
        if self.results.backend is not None and settings.result_backend_url is not None:
            redis_steps.append(("RESULT_BACKEND_URL", settings.result_backend_url, self.results.backend.ping))
        for setting, url, step in redis_steps:
            try:
                await step()
            except (RedisError, OSError) as error:
                raise StartupError(redis_problem(error, setting, url)) from None
        try:
            await self.inference.wait_ready(settings.triton_ready_timeout_s)
            await self.photo_choice.wait_ready(settings.triton_ready_timeout_s)
            self.background_removal = await self.inference.background_removal()
        except JobError as error:
            raise StartupError(f"Triton at {settings.triton_url} (TRITON_URL): {error}") from None
        try:  # the heartbeat only once the models are ready: `healthcheck` passes from then on
            await self.queue.register()
        except (RedisError, OSError) as error:
            raise StartupError(redis_problem(error, "REDIS_URL", settings.redis_url)) from None

    async def _job_loop(self) -> None:
        outage = OutageLog(log, "Redis unreachable; claiming again in 1 s")
        while not self.stopping.is_set():
            if not self.triton_ready.is_set():
                await _first(self.triton_ready.wait(), self.stopping.wait())
                continue
            try:
                delivery = await self.queue.claim(CLAIM_TIMEOUT_S)
            except (RedisError, OSError) as error:
                outage.failed(error)
                await asyncio.sleep(1.0)
                continue
            outage.succeeded()
            if delivery is None:
                continue
            try:
                await self.consumer.consume(delivery)
            finally:
                self.queue.let_go(delivery)

    def _triton_unavailable(self) -> None:
        """Pause every job loop until `_watch_triton` sees the model ready again."""
        self.triton_ready.clear()
        self._triton_down.set()

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(list(self.consumer.running))

    async def _maintenance(self) -> None:
        await self._notice_redis_restart()
        moved = await self.queue.reconcile()
        if moved:
            log.warning("handed back messages nobody was working on", extra={"messages": moved})
        await self.queue.promote_due()
        for instance, count in (await self.queue.recover_dead_workers()).items():
            self.metrics.recovered.inc(count)
            log.warning("recovered the jobs of a dead worker", extra={"dead_worker": instance, "jobs": count})
        await self.results.copy()
        await self.records.remove_discarded()
        for name, depth in (await self.queue.depths()).items():
            self.metrics.queue_depth.labels(name).set(depth)
        await self._watch_stranded()

    async def _watch_stranded(self) -> None:
        """Say, once each time it changes, that messages wait where this worker does not look."""
        stranded = await self.queue.stranded()
        self.metrics.stranded.set(sum(stranded.lists.values()))
        if set(stranded.lists) == self._stranded_lists:
            return
        self._stranded_lists = set(stranded.lists)
        if stranded.lists:
            log.error(stranded.advice(self.settings), extra={"stranded": stranded.shown()})
        else:
            log.info("no message waits in a priority list this worker does not read")

    async def _notice_redis_restart(self) -> None:
        """A restarted Redis may have lost its last writes (`appendfsync everysec`): reconcile."""
        run_id = (await self.redis.info("server"))["run_id"]
        if self._redis_run_id is not None and run_id != self._redis_run_id:
            log.warning("Redis restarted; checking this worker's processing list")
            self.queue.needs_reconcile = True
        self._redis_run_id = run_id

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
        outage = OutageLog(log, f"background task {action.__name__.lstrip('_')}: Redis unreachable")
        while not self._closing.is_set():
            try:
                await action()
            except (RedisError, OSError) as error:  # an outage must not end the heartbeat or maintenance loop
                outage.failed(error)
            except Exception:
                log.exception("background task failed", extra={"task": action.__name__})
            else:
                outage.succeeded()
            await self._pause(interval_s)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the worker is closing."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


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
