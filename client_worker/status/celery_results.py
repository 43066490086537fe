"""Celery results of our tasks, for producers that wait with `AsyncResult(task_id).get()`.

Only with `RESULT_BACKEND_URL` set (the producers' `result_backend`, a Redis URL). A result is
what Celery's Redis backend writes: the key `celery-task-meta-<task_id>` holding the JSON meta
`{status, result, traceback, children, date_done, task_id}` for `RESULT_EXPIRES_S`, and a
pub/sub message with the same meta on a channel of the same name (see docs/facts.md,
"Celery canvas and results"). Success carries `{job_id, status, model_url}` (and `quality`, the asset's check,
docs/webhooks.md); a failure carries an exception in
Celery's JSON form, which `get()` raises with the job's error message.

The meta goes first into an outbox hash in the broker's Redis, inside the transaction that
acknowledges the job; it is then copied to the result backend (which may be another server) and
taken out of the outbox. A worker that dies in between leaves it for the next pass of any worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from client_worker.jobs.keys import RedisKeys
from client_worker.logs import OutageLog

log = logging.getLogger(__name__)

META_KEY_PREFIX = "celery-task-meta-"
FAILURE_EXCEPTION = {"exc_type": "JobFailed", "exc_module": "photo_to_3d"}
"""The exception a producer's `get()` raises for a failed job: a module the producer does not
have, so Celery makes an exception class of that name carrying the message."""

_SETTLE = """
-- KEYS: outbox hash.  ARGV: task id, meta written.  Only what was written leaves the outbox.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


class CeleryResults:
    """Stages results in the broker's Redis and copies them to the result backend."""

    def __init__(self, redis: Redis, keys: RedisKeys, backend: Redis | None, expires_s: int) -> None:
        self.redis = redis
        self.outbox = keys.celery_results()
        self.backend = backend
        self.expires_s = expires_s
        self._settle = redis.register_script(_SETTLE)
        self._copies: set[asyncio.Task[None]] = set()
        self._outage = OutageLog(log, "Celery results not written yet (Redis or the result backend unreachable); "
                                      "the next pass retries")

    def success(self, task_ids: list[str], result: dict[str, Any]) -> Callable[[Pipeline], None]:
        """Writes (for the acknowledging transaction) of a successful result for ``task_ids``."""
        return self._writes(task_ids, "SUCCESS", result)

    def failure(self, task_ids: list[str], message: str, *, expired: bool = False) -> Callable[[Pipeline], None]:
        """Writes of a failure, raised by `get()` as ``JobFailed(message)``; an ``expired`` task is
        REVOKED, as a Celery worker marks it, and raised as Celery's ``TaskRevokedError``."""
        if expired:
            revoked = {"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions", "exc_message": [message]}
            return self._writes(task_ids, "REVOKED", revoked)
        return self._writes(task_ids, "FAILURE", {**FAILURE_EXCEPTION, "exc_message": [message]})

    def _writes(self, task_ids: list[str], status: str, result: Any) -> Callable[[Pipeline], None]:
        if self.backend is None or not task_ids:
            return lambda pipe: None
        done = datetime.now(timezone.utc).isoformat()
        metas = {task_id: json.dumps({"status": status, "result": result, "traceback": None, "children": [],
                                      "date_done": done, "task_id": task_id}) for task_id in task_ids}

        def write(pipe: Pipeline) -> None:
            pipe.hset(self.outbox, mapping=metas)

        return write

    def copy_soon(self) -> None:
        """Copy the staged results to the result backend in the background."""
        if self.backend is None:
            return
        task = asyncio.create_task(self._copy_in_background())
        self._copies.add(task)
        task.add_done_callback(self._copies.discard)

    async def _copy_in_background(self) -> None:
        try:
            await self.copy()
        except (RedisError, OSError) as error:  # the backend or Redis unreachable: the outbox keeps the results
            self._outage.failed(error)
        else:
            self._outage.succeeded()

    async def copy(self) -> int:
        """Write every staged result to the result backend; returns how many."""
        if self.backend is None:
            return 0
        staged = await self.redis.hgetall(self.outbox)
        for task_id, meta in staged.items():
            key = META_KEY_PREFIX + task_id.decode()
            async with self.backend.pipeline(transaction=False) as pipe:
                pipe.set(key, meta, ex=self.expires_s)
                pipe.publish(key, meta)
                await pipe.execute()
            await self._settle(keys=[self.outbox], args=[task_id, meta])
        return len(staged)

    async def drain(self, timeout_s: float) -> None:
        """Wait for background copies (shutdown); what does not finish stays in the outbox."""
        if self._copies:
            await asyncio.wait(set(self._copies), timeout=timeout_s)

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()
