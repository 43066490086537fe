"""Delivery of status webhooks to the backend: `POST {BACKEND_URL}/api/models/webhook/update`.

The body is the guide's ``jobId/status/modelUrl/errorMessage/metadata``. What to send comes from
the outbox that ``client_worker.status.store`` writes with every status; only a job's newest event
is sent, one delivery of a job at a time in a process, so the backend sees a job's statuses in
order. A delivery is tried a few times at once; what is still undelivered waits in the outbox with
a back-off of its own and is re-sent by any worker's outbox loop (`keep_delivering`), so a backend
outage delays results but never loses them. With ``WEBHOOK_SECRET`` set each request carries an
HMAC-SHA256 signature over ``timestamp + "." + raw body`` (verification: docs/webhooks.md).

A backend outage (connection errors, timeouts, 502, 503, 504, 429) is the backend's state, not an
event's: once one is seen, the sender stops sending and probes the backend with one waiting event
at a time, at most `PROBE_MAX_PAUSE_S` apart; the first delivery that succeeds brings every
backed-off event forward and the outbox drains at once, `WEBHOOK_CONCURRENCY` requests at a time
(docs/webhooks.md, "Delivery semantics").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from client_worker.backoff import Backoff
from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys
from client_worker.logs import OutageLog
from client_worker.metrics import Metrics
from client_worker.status.store import StatusEvent

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/models/webhook/update"
SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ID_HEADER = "X-Webhook-Id"
RETRYABLE_STATUS = {408, 425, 429}
UNAVAILABLE_STATUS = {429, 502, 503, 504}
"""Answers that say the backend as a whole does not take deliveries now (as a connection error or a
timeout does), unlike a 500, which may be about one event."""
#: The longest pause between two immediate attempts of one delivery, also when Retry-After asks for more.
MAX_PAUSE_S = 30.0
PROBE_MAX_PAUSE_S = 5.0
"""The longest pause between two probes of a backend that is unavailable: how late at most the
sender notices that it answers again."""
BATCH = 50
"""Outbox entries taken at once by the outbox loop."""

_TAKE_DUE = """
-- KEYS: outbox due zset, waiting set.  ARGV: now, lease seconds, batch.  Claims due entries for a while.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), job)
  redis.call('SREM', KEYS[2], job)
end
return due
"""

_TAKE_PROBE = """
-- KEYS: outbox due zset, waiting set.  ARGV: now, lease seconds.  Claims one waiting entry.
local job = redis.call('SRANDMEMBER', KEYS[2])
if not job then return false end
redis.call('SREM', KEYS[2], job)
if not redis.call('ZSCORE', KEYS[1], job) then return false end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), job)
return job
"""

_BRING_FORWARD = """
-- KEYS: outbox due zset, waiting set.  ARGV: now.  Every entry waiting out a back-off is due now.
local moved = 0
for _, job in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('ZSCORE', KEYS[1], job) then
    redis.call('ZADD', KEYS[1], ARGV[1], job)
    moved = moved + 1
  end
end
redis.call('DEL', KEYS[2])
return moved
"""

_SETTLE = """
-- KEYS: outbox hash, outbox due zset, status hash, waiting set.  ARGV: job id, event id, delivery note.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and cjson.decode(current)['event_id'] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[1])
end
if redis.call('HGET', KEYS[3], 'event_id') == ARGV[2] then
  redis.call('HSET', KEYS[3], 'delivery', ARGV[3])
end
return 1
"""

_RESCHEDULE = """
-- KEYS: outbox hash, outbox due zset, waiting set.  ARGV: job id, event id, due time, note.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local event = cjson.decode(current)
if event['event_id'] ~= ARGV[2] then return 0 end
event['failures'] = (event['failures'] or 0) + 1
event['last_error'] = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(event))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""


@dataclass
class _JobLock:
    """Serializes one job's deliveries; dropped when nobody waits on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, the value of X-Webhook-Signature."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookSender:
    """Delivers the outbox's events to the backend's webhook."""

    def __init__(self, redis: Redis, settings: Settings, http: httpx.AsyncClient, metrics: Metrics) -> None:
        self.redis = redis
        self.settings = settings
        self.http = http
        self.metrics = metrics
        self.keys = RedisKeys(settings.key_prefix)
        self.url = settings.backend_url + WEBHOOK_PATH
        # Between the immediate attempts of one delivery, then between redeliveries from the outbox.
        self._retry = Backoff(settings.webhook_retry_base_delay_s, MAX_PAUSE_S)
        self._redelivery = Backoff(settings.webhook_retry_base_delay_s * 4, settings.webhook_redelivery_max_delay_s)
        self._probing = Backoff(settings.webhook_retry_base_delay_s,
                                min(PROBE_MAX_PAUSE_S, settings.webhook_redelivery_max_delay_s))
        self._secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self._take_due = redis.register_script(_TAKE_DUE)
        self._take_probe = redis.register_script(_TAKE_PROBE)
        self._bring_forward = redis.register_script(_BRING_FORWARD)
        self._settle = redis.register_script(_SETTLE)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._locks: dict[str, _JobLock] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._requests = asyncio.Semaphore(settings.webhook_concurrency)
        self._unavailable = False
        """The backend did not take the last delivery (an outage): only probes are sent."""
        self._probes = 0
        self._next_probe = 0.0
        self._catch_up = True
        """The next delivered event brings the backed-off ones forward (after an outage, and at start)."""
        self._wake = asyncio.Event()
        self._background_outage = OutageLog(log, "webhook delivery: Redis unreachable; the outbox will retry")
        self._loop_outage = OutageLog(log, "webhook outbox: Redis unreachable")

    @property
    def delivery_window_s(self) -> float:
        """How long one delivery (all its immediate attempts) may take before the outbox retries it."""
        attempts = self.settings.webhook_attempts
        pauses = sum(self._retry.step(failure) for failure in range(1, attempts))
        return attempts * self.settings.webhook_timeout_s + pauses

    def deliver_soon(self, job_id: str) -> None:
        """Start delivering the job's latest outbox event in the background."""
        task = asyncio.create_task(self._deliver_in_background(job_id))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_in_background(self, job_id: str) -> None:
        try:
            await self.deliver_latest(job_id)
        except (RedisError, OSError) as error:  # the event is in the outbox (or will be re-recorded)
            self._background_outage.failed(error, job_id=job_id)
        else:
            self._background_outage.succeeded()

    async def drain(self, timeout_s: float) -> None:
        """Wait for background deliveries (shutdown); what does not finish stays in the outbox."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=timeout_s)

    async def deliver_latest(self, job_id: str, *, probe: bool = False) -> bool:
        """POST the job's newest outbox event; True when it was delivered (or nothing was pending).

        One delivery per job at a time in this process, and only the newest event is ever sent,
        so the backend sees a job's statuses in order. While the backend is unavailable the event
        waits in the outbox unsent, unless this delivery is the ``probe`` (one attempt).
        """
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.users += 1
        try:
            async with entry.lock:
                while True:
                    event = await self._outboxed(job_id)
                    if event is None:
                        return True
                    result = await self._deliver(event, probe=probe)
                    if result != "superseded":
                        return result == "delivered"
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[job_id]

    async def _outboxed(self, job_id: str) -> StatusEvent | None:
        text = await self.redis.hget(self.keys.outbox(), job_id)
        return None if text is None else StatusEvent.from_json(text)

    async def keep_delivering(self, closing: asyncio.Event) -> None:
        """The outbox loop, until ``closing``: re-send what is due (any worker may run this), probe an
        unavailable backend, drain at once when it answers again."""
        while not closing.is_set():
            try:
                taken = await self.redeliver_due()
            except (RedisError, OSError) as error:
                self._loop_outage.failed(error)
                taken = 0
            else:
                self._loop_outage.succeeded()
            if taken >= BATCH and not self._unavailable:
                continue  # more may be due: go on at once
            pause = self.settings.maintenance_interval_s
            if self._unavailable:
                pause = min(pause, max(0.0, self._next_probe - time.monotonic()))
            self._wake.clear()
            waits = [asyncio.ensure_future(closing.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()

    async def redeliver_due(self, batch: int = BATCH) -> int:
        """Re-send outbox events whose time has come, `WEBHOOK_CONCURRENCY` at a time; while the
        backend is unavailable, send one probe instead when one is due. Returns how many were taken."""
        if self._unavailable:
            if time.monotonic() < self._next_probe:
                return 0
            job = await self._take_probe(keys=[self.keys.outbox_due(), self.keys.outbox_waiting()],
                                         args=[time.time(), self.delivery_window_s])
            if job is None:  # nothing waits: there is nothing to probe with
                self._unavailable = False
                return 0
            await self.deliver_latest(job.decode(), probe=True)
            return 1
        due = await self._take_due(
            keys=[self.keys.outbox_due(), self.keys.outbox_waiting()], args=[time.time(), self.delivery_window_s, batch]
        )
        await asyncio.gather(*(self.deliver_latest(job_id.decode()) for job_id in due))
        return len(due)

    async def _deliver(self, event: StatusEvent, *, probe: bool = False
                       ) -> Literal["delivered", "rejected", "failed", "superseded"]:
        """Try one event a few times (once for a probe; not at all when the backend was unavailable
        before it began: the probes find out when it answers again); stop early when a newer event
        of the job replaced it."""
        body = event.webhook_body()
        error = "the backend was unavailable (the event waits for it to answer again)"
        attempts = 1 if probe else 0 if self._unavailable else self.settings.webhook_attempts
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                latest = await self._outboxed(event.job_id)
                if latest is None or latest.event_id != event.event_id:
                    return "superseded"
            retry_after: float | None = None
            try:
                async with self._requests:
                    response = await self.http.post(
                        self.url, content=body, headers=self._headers(event, body),
                        timeout=self.settings.webhook_timeout_s,
                    )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._backend_unavailable()
            else:
                if response.is_success:
                    self.metrics.webhooks.labels("delivered").inc()
                    await self._mark(event, "delivered")
                    log.info("webhook delivered", extra={"job_id": event.job_id, "status": event.status})
                    await self._backend_answers()
                    return "delivered"
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_STATUS:
                    self.metrics.webhooks.labels("rejected").inc()
                    await self._mark(event, f"rejected by the backend ({error})")
                    log.error(
                        "webhook rejected by the backend; not retried",
                        extra={"job_id": event.job_id, "status": event.status, "error": error},
                    )
                    return "rejected"
                if response.status_code in UNAVAILABLE_STATUS:
                    self._backend_unavailable()
                retry_after = _retry_after(response)
            self.metrics.webhooks.labels("failed").inc()
            if attempt < attempts:
                pause = retry_after if retry_after is not None else self._retry.delay(attempt)
                await asyncio.sleep(min(pause, MAX_PAUSE_S))
        due = time.time() + self._redelivery.delay(event.failures + 1)
        await self._reschedule(
            keys=[self.keys.outbox(), self.keys.outbox_due(), self.keys.outbox_waiting()],
            args=[event.job_id, event.event_id, due, error],
        )
        if attempts:
            log.warning(
                "webhook not delivered; kept in the outbox for redelivery",
                extra={"job_id": event.job_id, "status": event.status, "error": error},
            )
        return "failed"

    def _backend_unavailable(self) -> None:
        """The backend does not take deliveries now: send nothing but probes until one is delivered."""
        if not self._unavailable:
            self._probes = 0
            log.warning("the backend does not take webhooks now; probing it until it answers",
                        extra={"url": self.url})
        self._unavailable = True
        self._catch_up = True
        self._probes += 1
        self._next_probe = time.monotonic() + self._probing.delay(self._probes)

    async def _backend_answers(self) -> None:
        """A delivery succeeded: after an outage, every backed-off event is due now, and the outbox
        loop drains them."""
        if self._unavailable:
            log.info("the backend answers again; delivering the outbox", extra={"probes": self._probes})
        self._unavailable = False
        if self._catch_up:
            self._catch_up = False
            await self._bring_forward(keys=[self.keys.outbox_due(), self.keys.outbox_waiting()], args=[time.time()])
            self._wake.set()

    async def _mark(self, event: StatusEvent, note: str) -> None:
        await self._settle(
            keys=[self.keys.outbox(), self.keys.outbox_due(), self.keys.status(event.job_id),
                  self.keys.outbox_waiting()],
            args=[event.job_id, event.event_id, note],
        )

    def _headers(self, event: StatusEvent, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", ID_HEADER: event.event_id, TIMESTAMP_HEADER: timestamp}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
