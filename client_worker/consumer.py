"""Everything that happens to one claimed message, ending in exactly one acknowledgement.

A message is parsed (``jobs.intake``); what is not a job for us is moved to the rejected list at
first sight, a job with a future ETA is announced and deferred, a duplicate of a job that is done
or running elsewhere is dropped, a malformed or expired job fails with a webhook. Everything else
runs (``processing``), and its outcome (completed, retried, failed) is acknowledged to the queue
in the same transaction as its status, webhook outbox entry, Celery result and the Celery tasks
that follow it.

Redis errors never lose a message. Every acknowledgement is idempotent (``jobs.queue``), so one
whose reply was lost is repeated until Redis confirms it; a run that Redis failed in the middle
is handed back without using up an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from redis.exceptions import RedisError

from client_worker.attempt_records import RedisAttemptRecords
from client_worker.backoff import Backoff
from client_worker.config import Settings
from client_worker.jobs.celery_canvas import CeleryCanvas
from client_worker.jobs.celery_wire import RejectedMessage, TaskMessage, parse_message
from client_worker.jobs.intake import MalformedJob, parse_job
from client_worker.jobs.job import Job
from client_worker.jobs.limits import MessageLimits
from client_worker.jobs.queue import Delivery, JobQueue, Run, Writes, combined
from client_worker.memory import release_memory
from client_worker.metrics import Metrics
from client_worker.pipeline.quality_check import QUALITY_KEY
from client_worker.pipeline.stages import Stage
from client_worker.processing import JobProcessor, StageFailure
from client_worker.retry_policy import GiveUp, Retry, RetryPolicy
from client_worker.status.celery_results import CeleryResults
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIRM_RETRY = Backoff(0.25, 5.0)
"""Pauses between repeats of a Redis step whose outcome is unknown (Redis unreachable)."""


class Consumer:
    """Takes each claimed delivery to its one acknowledgement; shared by all job loops of a worker."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        processor: JobProcessor,
        records: RedisAttemptRecords,
        status: StatusStore,
        webhooks: WebhookSender,
        results: CeleryResults,
        canvas: CeleryCanvas,
        retries: RetryPolicy,
        metrics: Metrics,
        on_triton_unavailable: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.processor = processor
        self.records = records
        self.status = status
        self.webhooks = webhooks
        self.results = results
        self.canvas = canvas
        self.retries = retries
        self.metrics = metrics
        self.on_triton_unavailable = on_triton_unavailable
        self.limits = MessageLimits.from_settings(settings)
        self.running: set[str] = set()
        """The ids of the jobs running now, whose leases the heartbeat extends."""
        self._hand_backs: set[asyncio.Future[None]] = set()

    async def settle_hand_backs(self) -> None:
        """Wait until the jobs cancelled at shutdown are back on the queue. With Redis away it waits
        `REDIS_TIMEOUT_S` at most: a job not handed back stays in this worker's processing list, which
        the other workers recover once its heartbeat has expired."""
        if self._hand_backs:
            await asyncio.wait(set(self._hand_backs), timeout=self.settings.redis_timeout_s)

    async def consume(self, delivery: Delivery) -> None:
        """Everything that happens to one claimed message, ending in exactly one acknowledgement."""
        try:
            await self._consume(delivery)
        except Exception as error:  # a bug: the message is moved aside with the reason, never looped on
            log.exception("the worker failed on a message; it is moved to the rejected list")
            await self._reject(delivery, f"the worker failed on it ({type(error).__name__})")

    async def _consume(self, delivery: Delivery) -> None:
        try:
            message = parse_message(delivery.raw, self.settings.task_name, self.limits)
        except RejectedMessage as rejection:
            await self._reject(delivery, str(rejection))
            log.warning("message rejected", extra={"reason": str(rejection), "list": self.settings.rejected_list})
            return
        try:
            job: Job | MalformedJob = parse_job(message, self.limits)
        except MalformedJob as malformed:
            if malformed.job_id is None:
                await self._reject(delivery, str(malformed))
                log.error("job without a job_id rejected", extra={"reason": str(malformed)})
                return
            job = malformed
        job_id = str(job.job_id)
        if isinstance(job, Job) and message.eta is not None and message.eta.timestamp() > time.time():
            await self._schedule(delivery, job_id, message.eta)
            return
        if job_id in self.running:  # a second copy while this worker runs the job: its own lease is no guard
            await self._defer(delivery, job_id, "the job is running on this worker")
            return
        self.running.add(job_id)
        try:
            await self._admit_and_run(delivery, message, job)
        finally:
            self.running.discard(job_id)
        await asyncio.to_thread(release_memory)

    async def _admit_and_run(self, delivery: Delivery, message: TaskMessage, job: Job | MalformedJob) -> None:
        """Admit the job, then run it, or fail it at once when it is malformed, expired or out of attempts."""
        job_id = str(job.job_id)
        finishing = isinstance(job, Job) and await self._confirmed(lambda: self.records.uploaded(job_id))
        admission = await self._confirmed(
            lambda: self.queue.admit(delivery, job_id, message.delivery_id, counted=not finishing)
        )
        if admission.decision == "busy":
            await self._defer(delivery, job_id, f"the job is running on {admission.holder}")
            return
        if admission.run is None:
            await self._confirmed(lambda: self.queue.skip(delivery))
            self.metrics.jobs.labels("duplicate").inc()
            log.info("duplicate delivery skipped",
                     extra={"job_id": job_id, "reason": admission.decision, "holder": admission.holder})
            return
        run = admission.run
        if isinstance(job, MalformedJob):
            await self._fail(run, message, run.attempt, GiveUp("permanent", str(job)), Stage.INTAKE)
            return
        if not finishing:  # a job whose files are uploaded completes, whatever happened before
            if _expired(message):
                expired = GiveUp("expired", f"the job expired at {message.expires} before a worker could start it")
                await self._fail(run, message, run.attempt, expired, Stage.INTAKE)
                return
            refusal = self.retries.before_attempt(run.attempt)
            if refusal is not None:
                await self._fail(run, message, run.attempt - 1, refusal, Stage.INTAKE)
                return
        await self._run_job(run, message, job, finishing)

    async def _reject(self, delivery: Delivery, reason: str) -> None:
        """Move a message that is not a job we can run to the rejected list, with ``reason``, and count it."""
        await self._confirmed(lambda: self.queue.reject(delivery, reason))
        self.metrics.rejected.inc()

    async def _defer(self, delivery: Delivery, job_id: str, reason: str) -> None:
        """Try a copy again once the run holding the job may have let go of it (its lease's lifetime)."""
        await self._confirmed(lambda: self.queue.defer(delivery, time.time() + self.settings.heartbeat_ttl_s))
        self.metrics.jobs.labels("deferred").inc()
        log.info("job is busy; this copy is tried again later", extra={"job_id": job_id, "reason": reason})

    async def _run_job(self, run: Run, message: TaskMessage, job: Job, finishing: bool) -> None:
        self.metrics.in_flight.inc()
        log.info("job started", extra={"job_id": job.job_id, "attempt": run.attempt})
        try:
            completed = await self.processor.process(job, run.attempt, run.token)
        except asyncio.CancelledError:
            hand_back = asyncio.ensure_future(self._confirmed(lambda: self.queue.release(run)))
            self._hand_backs.add(hand_back)
            await asyncio.shield(hand_back)
            self.metrics.jobs.labels("handed_back").inc()
            log.info("job handed back at shutdown", extra={"job_id": job.job_id})
            raise
        except RedisError as error:
            log.warning("Redis failed during the job; it is handed back, uncounted",
                        extra={"job_id": job.job_id, "error": str(error)})
            await self._confirmed(lambda: self.queue.release(run))
            self.metrics.jobs.labels("handed_back").inc()
        except StageFailure as failure:
            await self._failed_attempt(run, message, failure, finishing)
        else:
            await self._complete(run, message, completed.model_url, completed.metadata)
        finally:
            self.metrics.in_flight.dec()

    async def _complete(self, run: Run, message: TaskMessage, model_url: str, metadata: dict[str, object]) -> None:
        job_id = run.job_id
        event = StatusEvent(job_id, "completed", model_url=model_url, metadata=metadata)
        result = {"job_id": job_id, "status": "completed", "model_url": model_url,
                  **({QUALITY_KEY: metadata[QUALITY_KEY]} if QUALITY_KEY in metadata else {})}
        writes = combined(
            self.status.writes(event),
            self.records.forget(job_id),
            self.results.success(_result_ids(message), result),
            self.canvas.after_success(message, result),
        )
        if not await self._confirmed(lambda: self.queue.complete(run, model_url, writes)):
            self._overtaken(job_id)
            return
        self._announce(job_id)
        self.metrics.jobs.labels("completed").inc()
        log.info("job completed", extra={"job_id": job_id, "model_url": model_url,
                                         "timings_ms": metadata.get("timings_ms")})

    async def _failed_attempt(self, run: Run, message: TaskMessage, failure: StageFailure, finishing: bool) -> None:
        """``finishing``: the run only had to complete a job whose files were all uploaded before."""
        decision = self.retries.after_failure(failure.error, run.attempt)
        if isinstance(decision, Retry):
            if decision.pause_intake:
                self.on_triton_unavailable()
            await self._retry(run, failure, decision)
        elif not finishing and await self._confirmed(lambda: self.records.uploaded(run.job_id)):
            # Every file is uploaded and recorded (the attempt failed after that, at its deadline):
            # a run that only completes it is better than failing it and removing the files.
            await self._confirmed(lambda: self.queue.release(run))
            self.metrics.jobs.labels("handed_back").inc()
            log.warning("the job failed after all its files were uploaded; it is handed back to be completed",
                        extra={"job_id": run.job_id, "error": str(failure.error)})
        else:
            await self._fail(run, message, run.attempt, decision, failure.stage, failure.details)

    async def _retry(self, run: Run, failure: StageFailure, retry: Retry) -> None:
        job_id = run.job_id
        metadata = {"stage": "retry_scheduled", "failed_stage": failure.stage, "attempt": run.attempt,
                    "retry_in_s": round(retry.delay_s, 1), "last_error": str(failure.error)}
        writes = self.status.writes(StatusEvent(job_id, "processing", metadata=metadata))
        if not await self._confirmed(lambda: self.queue.retry(run, retry.delay_s, writes, counted=retry.counted)):
            self._overtaken(job_id)
            return
        self.webhooks.deliver_soon(job_id)
        self.metrics.jobs.labels("retried").inc()
        self.metrics.retries.labels(failure.stage).inc()
        log.warning("job will be retried", extra={"job_id": job_id, **metadata, "counted": retry.counted})

    async def _fail(self, run: Run, message: TaskMessage, attempts: int, failure: GiveUp, stage: Stage,
                    details: dict[str, object] | None = None) -> None:
        """Fail the job for good: dead-letter it with its status, and leave none of its files or
        records behind (``attempt_records``, `discard`). ``details``: what the failed attempt
        reports besides (the photo choice's report)."""
        job_id = run.job_id
        text = self.status.reportable(failure.message)
        event = StatusEvent(job_id, "failed", error_message=text,
                            metadata={**(details or {}), "attempts": attempts, "stage": stage, "kind": failure.kind})
        writes = combined(
            self.status.writes(event),
            self.results.failure([*_result_ids(message), *self.canvas.chained_task_ids(message)], text,
                                 expired=failure.kind == "expired"),
            self.canvas.after_failure(message),
            self.records.discard(job_id),
        )
        if not await self._confirmed(lambda: self.queue.fail(run, message.delivery_id, text, attempts, writes)):
            self._overtaken(job_id)
            return
        self._announce(job_id)
        try:
            await self.records.remove_discarded(job_id)
        except (RedisError, OSError) as error:  # the files wait in the discarded-files hash for maintenance
            log.warning("the files of the failed job are removed later", extra={"job_id": job_id, "error": str(error)})
        self.metrics.jobs.labels("failed").inc()
        log.error("job failed", extra={"job_id": job_id, "kind": failure.kind, "stage": stage, "error": text})

    async def _schedule(self, delivery: Delivery, job_id: str, eta: datetime) -> None:
        """Hold a job until its ETA, telling the backend when it will start (docs/webhooks.md)."""
        when = eta.astimezone(UTC).isoformat()
        event = StatusEvent(job_id, "processing", metadata={"stage": "scheduled", "eta": when, "progress": 0})
        writes: Writes = self.status.writes(event)
        if await self._confirmed(lambda: self.queue.schedule(delivery, job_id, eta.timestamp(), writes)):
            self.webhooks.deliver_soon(job_id)
            self.metrics.jobs.labels("deferred").inc()
            log.info("job scheduled for its ETA", extra={"job_id": job_id, "eta": when})
        else:
            self.metrics.jobs.labels("duplicate").inc()
            log.info("duplicate delivery skipped", extra={"job_id": job_id, "reason": "completed"})

    def _announce(self, job_id: str) -> None:
        """Tell the backend (webhook) and Celery producers (result backend) of a final outcome."""
        self.webhooks.deliver_soon(job_id)
        self.results.copy_soon()

    def _overtaken(self, job_id: str) -> None:
        self.metrics.jobs.labels("duplicate").inc()
        log.warning("another run of the job took it over meanwhile; this run's outcome is dropped",
                    extra={"job_id": job_id})

    async def _confirmed(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent Redis step until Redis answers it (a lost reply is safe to repeat)."""
        failures = 0
        while True:
            try:
                return await step()
            except (RedisError, OSError) as error:
                failures += 1
                log.warning("Redis unreachable; repeating the step", extra={"error": str(error), "tries": failures})
                await asyncio.sleep(CONFIRM_RETRY.delay(failures))


def _result_ids(message: TaskMessage) -> list[str]:
    """The task whose Celery result this job's outcome is (none for bare payloads or `ignore_result`)."""
    return [message.task_id] if message.task_id and not message.ignore_result else []


def _expired(message: TaskMessage) -> bool:
    return message.expires is not None and message.expires < datetime.now(UTC)
