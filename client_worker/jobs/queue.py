"""A reliable queue on top of the producers' plain Redis list.

Producers LPUSH onto `QUEUE_NAME` (Celery's `celery` list). A worker claims an element with
BLMOVE into its own processing list, so a message is always in exactly one Redis list and a
crash cannot lose it (docs/facts.md, "Reliable queues on Redis"). Liveness is a heartbeat key
with a TTL; any worker that sees another's heartbeat gone moves that worker's processing list
back onto the queue. Each job id has a bookkeeping hash (attempts, outcome) and a lease naming the instance
running it: a duplicate delivery of a completed job, or of a job running elsewhere, is
acknowledged without running it again. Transient failures go to a sorted set of delayed
retries; after the last attempt, or on a permanent failure, the message goes to the dead-letter
list with the reason. Every acknowledgement runs in one MULTI transaction together with the
caller's writes (the job's status and webhook outbox entry), so "done" and "reported" can never
disagree after a crash.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys

Writes = Callable[[Pipeline], None]
"""Commands a caller adds to an acknowledgement transaction (e.g. the terminal status and its webhook)."""

PRIORITY_SEPARATOR = "\x06\x16"
"""kombu stores priority > 0 messages in `<queue>\\x06\\x16<priority>` lists (3, 6, 9)."""

_ADMIT = """
-- KEYS: job hash, lease.  ARGV: instance id, lease ttl ms, heartbeat key prefix, job ttl s.
if redis.call('HGET', KEYS[1], 'outcome') == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'model_url') or ''}
end
local holder = redis.call('GET', KEYS[2])
if holder and (holder == ARGV[1] or redis.call('EXISTS', ARGV[3] .. holder) == 1) then
  return {'busy', holder}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HDEL', KEYS[1], 'outcome')
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'run', tostring(attempt)}
"""

_RECOVER = """
-- KEYS: heartbeat of the dead worker, its processing list, queue, workers set.  ARGV: worker id.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('SREM', KEYS[4], ARGV[1])
return moved
"""

_PROMOTE = """
-- KEYS: delayed zset, queue.  ARGV: now, batch size.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  redis.call('ZREM', KEYS[1], raw)
  redis.call('RPUSH', KEYS[2], raw)
end
return #due
"""

_HAND_BACK = """
-- KEYS: own processing list, queue.
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
return moved
"""


def instance_id(worker_name: str) -> str:
    """`name:pid:random`, unique per process start.

    A restarted process must never inherit the leases and processing list of its previous life
    (those are recovered like any dead worker's), so the id is not configurable; `WORKER_NAME`
    (default: the hostname) only prefixes it, which lets `healthcheck` find the workers of a host.
    """
    return f"{worker_name}:{os.getpid()}:{secrets.token_hex(3)}"


def combined(*writes: Writes) -> Writes:
    """Several callers' writes as one, all inside the same transaction."""

    def write(pipe: Pipeline) -> None:
        for each in writes:
            each(pipe)

    return write


@dataclass(frozen=True)
class Admission:
    """Whether a claimed job should run: `run` (with its attempt number) or why not."""

    decision: Literal["run", "completed", "busy"]
    attempt: int = 0
    model_url: str = ""
    holder: str = ""


def raw_for_json(raw: bytes) -> dict[str, str]:
    """A raw list element inside a JSON record: as text when it is UTF-8, else base64."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(raw).decode("ascii")}


class JobQueue:
    """The queue operations of one worker instance; all state lives in Redis."""

    def __init__(self, redis: Redis, settings: Settings, instance: str) -> None:
        self.redis = redis
        self.settings = settings
        self.instance = instance
        self.keys = RedisKeys(settings.key_prefix)
        self.queue = settings.queue_name
        self.processing = self.keys.processing(instance)
        self._lease_ms = int(settings.heartbeat_ttl_s * 1000)
        self._admit = redis.register_script(_ADMIT)
        self._recover = redis.register_script(_RECOVER)
        self._promote = redis.register_script(_PROMOTE)
        self._hand_back = redis.register_script(_HAND_BACK)

    def priority_lists(self) -> list[str]:
        """The lists kombu uses for priorities 3, 6 and 9 of our queue."""
        return [f"{self.queue}{PRIORITY_SEPARATOR}{priority}" for priority in (3, 6, 9)]

    async def register(self) -> None:
        """Announce this instance: heartbeat first, so nobody recovers an empty list we then fill."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.heartbeat(self.instance), str(time.time()), px=self._lease_ms)
            pipe.sadd(self.keys.workers(), self.instance)
            await pipe.execute()

    async def heartbeat(self, job_ids: list[str]) -> None:
        """Extend this instance's heartbeat and the leases of the jobs it is running."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.heartbeat(self.instance), str(time.time()), px=self._lease_ms)
            pipe.sadd(self.keys.workers(), self.instance)
            for job_id in job_ids:
                pipe.pexpire(self.keys.lease(job_id), self._lease_ms)
            await pipe.execute()

    async def claim(self, timeout_s: float) -> bytes | None:
        """Move the next message into our processing list; None when the queue stayed empty.

        Priority 0 (the plain list) first, as kombu does; BLMOVE can block on one key only, so
        the priority lists are polled without blocking before it.
        """
        for source in [self.queue, *self.priority_lists()]:
            raw = await self.redis.lmove(source, self.processing, "RIGHT", "LEFT")
            if raw is not None:
                return raw
        return await self.redis.blmove(self.queue, self.processing, timeout_s, "RIGHT", "LEFT")

    async def admit(self, job_id: str) -> Admission:
        """Take the job's lease and count the attempt, unless it is done or running elsewhere."""
        decision, detail = await self._admit(
            keys=[self.keys.job(job_id), self.keys.lease(job_id)],
            args=[self.instance, self._lease_ms, self.keys.heartbeat(""), self.settings.idempotency_ttl_s],
        )
        decision = decision.decode()
        detail = detail.decode()
        if decision == "run":
            return Admission("run", attempt=int(detail))
        if decision == "completed":
            return Admission("completed", model_url=detail)
        return Admission("busy", holder=detail)

    async def reject(self, raw: bytes, reason: str) -> None:
        """Move a message that is not a job for us to the rejected list, with the reason."""
        record = json.dumps({"reason": reason, "worker": self.instance, "at": time.time(), **raw_for_json(raw)})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.settings.rejected_list, record)
            pipe.lrem(self.processing, 1, raw)
            await pipe.execute()

    async def skip(self, raw: bytes) -> None:
        """Acknowledge a duplicate delivery without any other effect."""
        await self.redis.lrem(self.processing, 1, raw)

    async def defer(self, raw: bytes, due: float) -> None:
        """Hold a message until `due` (a Celery ETA) without counting an attempt."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.delayed(), {raw: due})
            pipe.lrem(self.processing, 1, raw)
            await pipe.execute()

    async def complete(self, raw: bytes, job_id: str, model_url: str, writes: Writes) -> bool:
        """Mark the job completed (duplicates are skipped from now on) and acknowledge it.

        False when another worker had completed it first (then `writes` did not run).
        """
        job = self.keys.job(job_id)
        return await self._acknowledge(
            raw,
            job_id,
            writes,
            lambda pipe: (
                pipe.hset(job, mapping={"outcome": "completed", "model_url": model_url, "finished_at": time.time()}),
                pipe.expire(job, self.settings.idempotency_ttl_s),
            ),
        )

    async def fail(self, raw: bytes, job_id: str | None, reason: str, attempts: int, writes: Writes) -> bool:
        """Dead-letter the message with the reason; a later re-enqueue of the job starts afresh."""
        record = json.dumps(
            {"job_id": job_id, "reason": reason, "attempts": attempts, "worker": self.instance,
             "at": time.time(), **raw_for_json(raw)}
        )

        def bookkeeping(pipe: Pipeline) -> None:
            pipe.lpush(self.settings.dead_letter_list, record)
            if job_id is not None:
                pipe.hset(self.keys.job(job_id), mapping={"outcome": "failed", "attempts": 0})
                pipe.expire(self.keys.job(job_id), self.settings.idempotency_ttl_s)

        return await self._acknowledge(raw, job_id, writes, bookkeeping)

    async def retry(self, raw: bytes, job_id: str, delay_s: float, writes: Writes, *, counted: bool = True) -> bool:
        """Put the message in the delayed set, due after `delay_s`.

        `counted=False` gives the attempt back: the failure was an outage of a dependency
        (Triton down), not something the job did, so it must not use up the job's attempts.
        """
        due = time.time() + delay_s

        def bookkeeping(pipe: Pipeline) -> None:
            pipe.zadd(self.keys.delayed(), {raw: due})
            if not counted:
                pipe.hincrby(self.keys.job(job_id), "attempts", -1)

        return await self._acknowledge(raw, job_id, writes, bookkeeping)

    async def requeue(self, raw: bytes) -> None:
        """Put a message back at the front of the queue after an unexpected error while handling it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.queue, raw)
            pipe.lrem(self.processing, 1, raw)
            await pipe.execute()

    async def release(self, raw: bytes, job_id: str) -> bool:
        """Hand an unfinished job back to the front of the queue (shutdown); the attempt is not counted."""

        def bookkeeping(pipe: Pipeline) -> None:
            pipe.hincrby(self.keys.job(job_id), "attempts", -1)
            pipe.rpush(self.queue, raw)

        return await self._acknowledge(raw, job_id, lambda pipe: None, bookkeeping)

    async def _acknowledge(
        self, raw: bytes, job_id: str | None, writes: Writes, bookkeeping: Callable[[Pipeline], object]
    ) -> bool:
        """Remove the message from our processing list together with the outcome's writes.

        Returns False, writing nothing but the removal, when the job was completed elsewhere in
        the meantime: a worker wrongly presumed dead (a stalled host) may finish a job that was
        already recovered and run again; only the first completion is recorded and reported.
        The job hash and lease are WATCHed, so that check and the writes are one atomic step.
        """
        if job_id is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                bookkeeping(pipe)
                writes(pipe)
                pipe.lrem(self.processing, 1, raw)
                await pipe.execute()
            return True
        job, lease = self.keys.job(job_id), self.keys.lease(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job, lease)
                    already_completed = await pipe.hget(job, "outcome") == b"completed"
                    ours = await pipe.get(lease) == self.instance.encode()
                    pipe.multi()
                    if not already_completed:
                        bookkeeping(pipe)
                        writes(pipe)
                    if ours:
                        pipe.delete(lease)
                    pipe.lrem(self.processing, 1, raw)
                    await pipe.execute()
                    return not already_completed
                except WatchError:
                    continue

    async def promote_due(self, now: float | None = None, batch: int = 100) -> int:
        """Move delayed messages whose time has come to the front of the queue."""
        return int(await self._promote(keys=[self.keys.delayed(), self.queue], args=[now or time.time(), batch]))

    async def recover_dead_workers(self) -> dict[str, int]:
        """Requeue the processing lists of instances whose heartbeat expired; {instance: count}."""
        recovered: dict[str, int] = {}
        for member in await self.redis.smembers(self.keys.workers()):
            other = member.decode()
            if other == self.instance:
                continue
            moved = int(
                await self._recover(
                    keys=[self.keys.heartbeat(other), self.keys.processing(other), self.queue, self.keys.workers()],
                    args=[other],
                )
            )
            if moved >= 0:
                recovered[other] = moved
        return recovered

    async def hand_back_all(self) -> int:
        """Requeue whatever is still in our processing list (claimed but never started)."""
        return int(await self._hand_back(keys=[self.processing, self.queue]))

    async def unregister(self) -> None:
        """Leave cleanly: nothing of ours is left for the others to recover."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.heartbeat(self.instance))
            pipe.srem(self.keys.workers(), self.instance)
            await pipe.execute()

    async def depths(self) -> dict[str, int]:
        """Lengths of the lists an operator watches (for the queue-depth gauge)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue)
            for name in self.priority_lists():
                pipe.llen(name)
            pipe.zcard(self.keys.delayed())
            pipe.llen(self.settings.dead_letter_list)
            pipe.llen(self.settings.rejected_list)
            queued, p3, p6, p9, delayed, dead, rejected = await pipe.execute()
        return {"queued": queued + p3 + p6 + p9, "delayed": delayed, "dead": dead, "rejected": rejected}

