"""Job status in Redis, written before any webhook is sent.

Every status change writes three things at once: a hash per job with the latest status (what
the backend can read if it prefers), a pub/sub message, and an *outbox* entry holding the
webhook still to be delivered (``client_worker.status.webhook`` sends it). Only the latest event
of a job is kept in the outbox, so a slow or failed delivery of an old ``processing`` update can
never arrive after ``completed``. A terminal status is written in the same transaction as the
queue's acknowledgement of the job (``writes``), so "done" and "reported" never disagree. Every
text of an event is redacted (no credential of the settings, ``client_worker.redaction``) and
bounded (``STATUS_TEXT_MAX_CHARS``) on its way in, whatever produced it.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from client_worker.jobs.keys import RedisKeys
from client_worker.redaction import Redaction

Status = Literal["processing", "completed", "failed"]


@dataclass(frozen=True)
class StatusEvent:
    """One status change of a job; ``event_id`` is stable across delivery retries (dedup key).

    ``failures`` counts the deliveries of this event that failed so far (the outbox keeps it).
    """

    job_id: str
    status: Status
    model_url: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    failures: int = 0

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
             "event_id": self.event_id, "created_at": self.created_at, "failures": self.failures},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StatusEvent:
        data = json.loads(text)
        return cls(
            job_id=data["job_id"], status=data["status"], model_url=data.get("model_url"),
            error_message=data.get("error_message"), metadata=data.get("metadata"),
            event_id=data["event_id"], created_at=data["created_at"], failures=int(data.get("failures") or 0),
        )


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying that it was cut."""
    if len(text) <= limit:
        return text
    suffix = f"… [cut, {len(text)} characters in all]"
    return text[: max(0, limit - len(suffix))] + suffix


def _reported_value(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {key: _reported_value(item, text) for key, item in value.items()}
    if isinstance(value, list):
        return [_reported_value(item, text) for item in value]
    return value


class StatusStore:
    """Writes status events to Redis and reads a job's latest status back."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, ttl_s: float, redeliver_after_s: float, text_limit: int,
        redaction: Redaction,
    ) -> None:
        """``redeliver_after_s``: when an outbox entry is due for redelivery if the sender that is
        delivering it right away has not settled it by then (it died, or Redis went away).
        ``text_limit``: the longest text (error message, metadata value) an event may carry.
        ``redaction``: the settings' credentials, removed from every text an event carries."""
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.redeliver_after_s = redeliver_after_s
        self.text_limit = text_limit
        self.redaction = redaction

    def reportable(self, text: str) -> str:
        """``text`` as the backend may see it: credentials masked, within ``text_limit``."""
        return bounded_text(self.redaction(text), self.text_limit)

    def reported(self, event: StatusEvent) -> StatusEvent:
        """The event with every text `reportable`."""
        return dataclasses.replace(
            event,
            error_message=None if event.error_message is None else self.reportable(event.error_message),
            metadata=None if event.metadata is None else _reported_value(event.metadata, self.reportable),
        )

    def writes(self, event: StatusEvent) -> Callable[[Pipeline], None]:
        """The Redis writes of an event, to run inside the caller's transaction."""
        event = self.reported(event)
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
            pipe.expire(status_key, int(self.ttl_s))
            pipe.publish(self.keys.status_channel(), message)
            pipe.hset(self.keys.outbox(), event.job_id, message)
            pipe.zadd(self.keys.outbox_due(), {event.job_id: time.time() + self.redeliver_after_s})
            pipe.srem(self.keys.outbox_waiting(), event.job_id)  # the new event is being sent now

        return write

    async def latest(self, job_id: str) -> dict[str, str]:
        """The job's status hash as text (empty when the job is unknown)."""
        raw = await self.redis.hgetall(self.keys.status(job_id))
        return {key.decode(): value.decode() for key, value in raw.items()}
