"""Everything that happens to one claimed message, ending in exactly one acknowledgement.

A message is parsed (``jobs.intake``); what is not a job for us is moved to the rejected list, a
job with a future ETA is deferred, a duplicate of a job that is done or running elsewhere is
skipped, a malformed or expired job fails with a webhook. Everything else runs
(``processing``), and its outcome (completed, retried, failed) is acknowledged to the queue in
the same transaction as its status and webhook outbox entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from client_worker.config import Settings
from client_worker.jobs.intake import Job, MalformedJob, RejectedMessage, TaskMessage, parse_job, parse_message
from client_worker.jobs.queue import JobQueue, combined
from client_worker.metrics import Metrics
from client_worker.processing import JobProcessor, StageFailure
from client_worker.retry_policy import GiveUp, Retry, RetryPolicy
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender

log = logging.getLogger(__name__)


class MessageRouter:
    """Routes claimed messages to their outcome; shared by all job loops of a worker."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        processor: JobProcessor,
        status: StatusStore,
        webhooks: WebhookSender,
        retries: RetryPolicy,
        metrics: Metrics,
        on_triton_unavailable: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.processor = processor
        self.status = status
        self.webhooks = webhooks
        self.retries = retries
        self.metrics = metrics
        self.on_triton_unavailable = on_triton_unavailable
        self.running: dict[str, bytes] = {}
        """The jobs running now (job id → raw message), whose leases the heartbeat extends."""
        self._hand_backs: set[asyncio.Future[None]] = set()

    async def settle_hand_backs(self) -> None:
        """Wait until the jobs cancelled at shutdown are back on the queue."""
        await asyncio.gather(*self._hand_backs, return_exceptions=True)

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
        admission = await self.queue.admit(job.job_id)
        if admission.decision != "run":
            await self.queue.skip(raw)
            self.metrics.jobs.labels("duplicate").inc()
            log.info("duplicate delivery skipped",
                     extra={"job_id": job.job_id, "reason": admission.decision, "holder": admission.holder})
            return
        if _expired(message):
            expired = GiveUp("expired", f"the job expired at {message.expires} before a worker could start it")
            await self._fail(raw, job.job_id, admission.attempt, expired, "intake")
            return
        refusal = self.retries.before_attempt(admission.attempt)
        if refusal is not None:
            await self._fail(raw, job.job_id, admission.attempt - 1, refusal, "intake")
            return
        await self._run_job(raw, job, admission.attempt)

    async def _run_job(self, raw: bytes, job: Job, attempt: int) -> None:
        self.running[job.job_id] = raw
        self.metrics.in_flight.inc()
        log.info("job started", extra={"job_id": job.job_id, "attempt": attempt})
        try:
            completed = await self.processor.process(job, attempt)
        except asyncio.CancelledError:
            hand_back = asyncio.ensure_future(self.queue.release(raw, job.job_id))
            self._hand_backs.add(hand_back)
            await asyncio.shield(hand_back)
            self.metrics.jobs.labels("handed_back").inc()
            log.info("job handed back at shutdown", extra={"job_id": job.job_id})
            raise
        except StageFailure as failure:
            await self._failed_attempt(raw, job.job_id, attempt, failure)
        else:
            event = StatusEvent(job.job_id, "completed", model_url=completed.model_url, metadata=completed.metadata)
            recorded = await self.queue.complete(
                raw, job.job_id, completed.model_url,
                combined(self.status.writes(event), self.processor.forget_artifact(job.job_id)),
            )
            if not recorded:
                self._completed_elsewhere(job.job_id)
                return
            self.webhooks.deliver_soon(job.job_id)
            self.metrics.jobs.labels("completed").inc()
            log.info("job completed", extra={"job_id": job.job_id, "model_url": completed.model_url,
                                             "timings_ms": completed.metadata.get("timings_ms")})
        finally:
            self.running.pop(job.job_id, None)
            self.metrics.in_flight.dec()

    async def _failed_attempt(self, raw: bytes, job_id: str, attempt: int, failure: StageFailure) -> None:
        decision = self.retries.after_failure(failure.error, attempt)
        if isinstance(decision, Retry):
            if decision.pause_intake:
                self.on_triton_unavailable()
            await self._retry(raw, job_id, attempt, failure, decision)
        else:
            await self._fail(raw, job_id, attempt, decision, failure.stage)

    async def _retry(self, raw: bytes, job_id: str, attempt: int, failure: StageFailure, retry: Retry) -> None:
        metadata = {"stage": "retry_scheduled", "failed_stage": failure.stage, "attempt": attempt,
                    "retry_in_s": round(retry.delay_s, 1), "last_error": str(failure.error)}
        event = StatusEvent(job_id, "processing", metadata=metadata)
        if not await self.queue.retry(raw, job_id, retry.delay_s, self.status.writes(event), counted=retry.counted):
            self._completed_elsewhere(job_id)
            return
        self.webhooks.deliver_soon(job_id)
        self.metrics.jobs.labels("retried").inc()
        self.metrics.retries.labels(failure.stage).inc()
        log.warning("job will be retried", extra={"job_id": job_id, **metadata, "counted": retry.counted})

    async def _fail(self, raw: bytes, job_id: str, attempts: int, failure: GiveUp, stage: str) -> None:
        event = StatusEvent(job_id, "failed", error_message=failure.message,
                            metadata={"attempts": attempts, "stage": stage, "kind": failure.kind})
        if not await self.queue.fail(raw, job_id, failure.message, attempts, self.status.writes(event)):
            self._completed_elsewhere(job_id)
            return
        self.webhooks.deliver_soon(job_id)
        self.metrics.jobs.labels("failed").inc()
        log.error("job failed", extra={"job_id": job_id, "kind": failure.kind, "stage": stage, "error": failure.message})

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
        admission = await self.queue.admit(malformed.job_id)
        if admission.decision != "run":
            await self.queue.skip(raw)
            return
        await self._fail(raw, malformed.job_id, admission.attempt, GiveUp("permanent", str(malformed)), "intake")


def _expired(message: TaskMessage) -> bool:
    return message.expires is not None and message.expires < datetime.now(timezone.utc)
