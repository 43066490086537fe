"""Job status: kept in Redis first, then delivered to the backend's webhook.

Every status change is written to Redis before any HTTP request: a hash per job with the
latest status (what the backend can read if it prefers), a pub/sub message, and an *outbox*
entry holding the webhook still to be delivered. Only the latest event of a job is kept in
the outbox, so a slow or failed delivery of an old `processing` update can never arrive after
`completed`. Delivery (`POST {BACKEND_URL}/api/models/webhook/update` with the guide's
`jobId/status/modelUrl/errorMessage/metadata` body) is retried with backoff; what is still
undelivered is re-sent later by any worker's outbox loop, so a backend outage delays results
but never loses them. With `WEBHOOK_SECRET` set each request carries an HMAC-SHA256 signature
over `timestamp + "." + raw body` (verification: docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from client_worker.config import RedisKeys, Settings
from client_worker.jobs.queue import Stage
from client_worker.metrics import Metrics

log = logging.getLogger(__name__)

Status = Literal["processing", "completed", "failed"]

WEBHOOK_PATH = "/api/models/webhook/update"
SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ID_HEADER = "X-Webhook-Id"
RETRYABLE_STATUS = {408, 425, 429}

_TAKE_DUE = """
-- KEYS: outbox due zset.  ARGV: now, lease seconds, batch.  Claims due entries for a while.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), job)
end
return due
"""

_SETTLE = """
-- KEYS: outbox hash, outbox due zset, status hash.  ARGV: job id, event id, delivery note.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and cjson.decode(current)['event_id'] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if redis.call('HGET', KEYS[3], 'event_id') == ARGV[2] then
  redis.call('HSET', KEYS[3], 'delivery', ARGV[3])
end
return 1
"""

_RESCHEDULE = """
-- KEYS: outbox hash, outbox due zset.  ARGV: job id, event id, base delay, max delay, now, note.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local event = cjson.decode(current)
if event['event_id'] ~= ARGV[2] then return 0 end
event['failures'] = (event['failures'] or 0) + 1
event['last_error'] = ARGV[6]
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (event['failures'] - 1))
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(event))
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]) + delay, ARGV[1])
return 1
"""


@dataclass(frozen=True)
class StatusEvent:
    """One status change of a job; `event_id` is stable across delivery retries (dedup key)."""

    job_id: str
    status: Status
    model_url: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)

    def webhook_body(self) -> bytes:
        """The guide's payload, keys omitted when empty, serialized once so the signature matches."""
        payload: dict[str, Any] = {"jobId": self.job_id, "status": self.status}
        if self.model_url:
            payload["modelUrl"] = self.model_url
        if self.error_message:
            payload["errorMessage"] = self.error_message
        if self.metadata:
            payload["metadata"] = self.metadata
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def to_json(self) -> str:
        return json.dumps(
            {"job_id": self.job_id, "status": self.status, "model_url": self.model_url,
             "error_message": self.error_message, "metadata": self.metadata,
             "event_id": self.event_id, "created_at": self.created_at},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "StatusEvent":
        data = json.loads(text)
        return cls(
            job_id=data["job_id"], status=data["status"], model_url=data.get("model_url"),
            error_message=data.get("error_message"), metadata=data.get("metadata"),
            event_id=data["event_id"], created_at=data["created_at"],
        )


@dataclass
class _JobLock:
    """Serializes one job's deliveries; dropped when nobody waits on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, the value of X-Webhook-Signature."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class StatusReporter:
    """Records status events in Redis and delivers them to the backend's webhook."""

    def __init__(self, redis: Redis, settings: Settings, http: httpx.AsyncClient, metrics: Metrics) -> None:
        self.redis = redis
        self.settings = settings
        self.http = http
        self.metrics = metrics
        self.keys: RedisKeys = settings.redis_keys()
        self.url = settings.backend_url + WEBHOOK_PATH
        self._secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self._take_due = redis.register_script(_TAKE_DUE)
        self._settle = redis.register_script(_SETTLE)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._locks: dict[str, _JobLock] = {}
        self._deliveries: set[asyncio.Task[None]] = set()

    @property
    def _delivery_window_s(self) -> float:
        """How long one delivery (all its immediate attempts) may take before the outbox retries it."""
        attempts = self.settings.webhook_attempts
        backoff = self.settings.webhook_retry_base_delay_s * (2**attempts)
        return attempts * self.settings.webhook_timeout_s + backoff

    def stage(self, event: StatusEvent) -> Stage:
        """The Redis writes of an event, to run inside the caller's transaction."""
        status_key = self.keys.status(event.job_id)
        message = event.to_json()

        def write(pipe: Pipeline) -> None:
            pipe.delete(status_key)
            pipe.hset(
                status_key,
                mapping={
                    "job_id": event.job_id,
                    "status": event.status,
                    "model_url": event.model_url or "",
                    "error_message": event.error_message or "",
                    "metadata": json.dumps(event.metadata or {}, ensure_ascii=False),
                    "event_id": event.event_id,
                    "updated_at": event.created_at,
                    "delivery": "pending",
                },
            )
            pipe.expire(status_key, self.settings.status_ttl_s)
            pipe.publish(self.keys.status_channel(), message)
            pipe.hset(self.keys.outbox(), event.job_id, message)
            pipe.zadd(self.keys.outbox_due(), {event.job_id: time.time() + self._delivery_window_s})

        return write

    async def record(self, event: StatusEvent) -> bool:
        """Write an event to Redis on its own (progress updates, which need no acknowledgement).

        Nothing is written over a `completed` status (False is returned): a late progress update
        of a run that lost the race to complete must not make a finished job look unfinished.
        """
        status_key = self.keys.status(event.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(status_key)
                    if await pipe.hget(status_key, "status") == b"completed":
                        return False
                    pipe.multi()
                    self.stage(event)(pipe)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    def deliver_soon(self, job_id: str) -> None:
        """Start delivering the job's latest outbox event in the background."""
        task = asyncio.create_task(self._deliver_in_background(job_id))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_in_background(self, job_id: str) -> None:
        try:
            await self.deliver_latest(job_id)
        except Exception:  # Redis unreachable: the event is in the outbox (or will be re-recorded)
            log.exception("webhook delivery failed; the outbox will retry", extra={"job_id": job_id})

    async def report(self, event: StatusEvent) -> None:
        """Record an event and deliver it in the background (the job does not wait for the backend)."""
        if await self.record(event):
            self.deliver_soon(event.job_id)

    async def drain(self, timeout_s: float) -> None:
        """Wait for background deliveries (shutdown); what does not finish stays in the outbox."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=timeout_s)

    async def latest(self, job_id: str) -> dict[str, str]:
        """The job's status hash as text (empty when the job is unknown)."""
        raw = await self.redis.hgetall(self.keys.status(job_id))
        return {key.decode(): value.decode() for key, value in raw.items()}

    async def deliver_latest(self, job_id: str) -> bool:
        """POST the job's newest outbox event; True when it was delivered (or nothing was pending).

        One delivery per job at a time in this process, and only the newest event is ever sent,
        so the backend sees a job's statuses in order.
        """
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.users += 1
        try:
            async with entry.lock:
                while True:
                    event = await self._outboxed(job_id)
                    if event is None:
                        return True
                    result = await self._deliver(event)
                    if result != "superseded":
                        return result == "delivered"
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[job_id]

    async def _outboxed(self, job_id: str) -> StatusEvent | None:
        text = await self.redis.hget(self.keys.outbox(), job_id)
        return None if text is None else StatusEvent.from_json(text)

    async def redeliver_due(self, batch: int = 50) -> int:
        """Re-send outbox events whose time has come (any worker may run this); returns how many."""
        due = await self._take_due(
            keys=[self.keys.outbox_due()], args=[time.time(), self._delivery_window_s, batch]
        )
        delivered = 0
        for job_id in due:
            delivered += await self.deliver_latest(job_id.decode())
        return delivered

    async def _deliver(self, event: StatusEvent) -> Literal["delivered", "rejected", "failed", "superseded"]:
        """Try one event a few times; stop early when a newer event of the job replaced it."""
        body = event.webhook_body()
        error = "not attempted"
        for attempt in range(1, self.settings.webhook_attempts + 1):
            if attempt > 1:
                latest = await self._outboxed(event.job_id)
                if latest is None or latest.event_id != event.event_id:
                    return "superseded"
            retry_after: float | None = None
            try:
                response = await self.http.post(
                    self.url, content=body, headers=self._headers(event, body), timeout=self.settings.webhook_timeout_s
                )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    self.metrics.webhooks.labels("delivered").inc()
                    await self._mark(event, "delivered")
                    log.info("webhook delivered", extra={"job_id": event.job_id, "status": event.status})
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
                retry_after = _retry_after(response)
            self.metrics.webhooks.labels("failed").inc()
            if attempt < self.settings.webhook_attempts:
                step = self.settings.webhook_retry_base_delay_s * 2 ** (attempt - 1)
                pause = retry_after if retry_after is not None else step * random.uniform(1, 1.5)
                await asyncio.sleep(min(pause, 30.0))
        await self._reschedule(
            keys=[self.keys.outbox(), self.keys.outbox_due()],
            args=[event.job_id, event.event_id, self.settings.webhook_retry_base_delay_s * 4,
                  self.settings.webhook_redelivery_max_delay_s, time.time(), error],
        )
        log.warning(
            "webhook not delivered; kept in the outbox for redelivery",
            extra={"job_id": event.job_id, "status": event.status, "error": error},
        )
        return "failed"

    async def _mark(self, event: StatusEvent, note: str) -> None:
        await self._settle(
            keys=[self.keys.outbox(), self.keys.outbox_due(), self.keys.status(event.job_id)],
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
