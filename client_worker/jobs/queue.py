"""A reliable queue on top of the producers' plain Redis lists.

Producers LPUSH onto `QUEUE_NAME` (Celery's `celery` list) and its priority lists. A worker claims
an element with (B)LMOVE into its own processing list, so a message is always in exactly one
Redis list and a crash cannot lose it (docs/facts.md, "Reliable queues on Redis"). Liveness is a
heartbeat key with a TTL; any worker that sees another's heartbeat gone moves that worker's
processing list back onto the queue.

Each job id has a bookkeeping hash (attempts, outcome, the token of the run that may finish it)
and a lease naming the instance running it. An admission hands out a fresh *run token*; only the
run holding the current token acknowledges the job's outcome, so a run that was overtaken (its
worker was presumed dead, or Redis came back after its heartbeat expired) can never report a
second, different outcome. Every acknowledgement is one MULTI transaction with the caller's
writes (the job's status and webhook outbox entry), and each is idempotent: the job hash records
the token of the acknowledgement applied, so after a lost reply the caller simply repeats it. That
is why the worker's Redis client never resends commands itself (see `worker.py`).

A lease held by a live instance means "busy" only when that instance still has the message in
its processing list; otherwise (it gave the job back after a Redis error) the message waits in
the delayed set until the lease is free, instead of being dropped. A live worker's processing
list can also hold elements it is not working on: an LMOVE whose reply was lost, or, with Redis
`appendfsync everysec`, an acknowledgement that Redis lost in a crash. `reconcile` hands those
back; the worker calls it after such errors and whenever Redis restarted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.priorities import PriorityLists, Stranded, stranded_messages

Writes = Callable[[Pipeline], None]
"""Commands a caller adds to an acknowledgement transaction (e.g. the terminal status and its webhook)."""

_ADMIT = """
-- KEYS: job hash, lease.  ARGV: instance id, lease ttl ms, heartbeat key prefix, job ttl s,
-- processing list prefix, raw message, run token, delivery id, count the attempt (1/0).
local job = redis.call('HMGET', KEYS[1], 'outcome', 'run', 'attempts', 'failed_delivery')
if job[1] == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'model_url') or ''}
end
if job[2] == ARGV[7] then
  return {'run', job[3] or '0'}
end
if job[1] == 'failed' and job[4] == ARGV[8] then
  return {'failed', ''}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
  if redis.call('LPOS', ARGV[5] .. holder, ARGV[6]) then
    return {'duplicate', holder}
  end
  return {'busy', holder}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HDEL', KEYS[1], 'outcome', 'failed_delivery')
local attempt
if ARGV[9] == '1' then
  attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
else
  attempt = math.max(tonumber(job[3] or '0'), 1)
  redis.call('HSET', KEYS[1], 'attempts', attempt)
end
redis.call('HSET', KEYS[1], 'run', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'run', tostring(attempt)}
"""

_RENEW = """
-- KEYS: the leases of the jobs this instance runs.  ARGV: instance id, lease ttl ms.
-- A lease that expired while Redis was away is taken again, unless another instance holds it.
for _, lease in ipairs(KEYS) do
  local holder = redis.call('GET', lease)
  if not holder or holder == ARGV[1] then redis.call('SET', lease, ARGV[1], 'PX', ARGV[2]) end
end
return #KEYS
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
-- KEYS: own processing list, queue.  ARGV: the elements to hand back (all of them when none).
local moved = 0
if #ARGV == 0 then
  while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
  return moved
end
for _, raw in ipairs(ARGV) do
  if redis.call('LREM', KEYS[1], 1, raw) == 1 then
    redis.call('RPUSH', KEYS[2], raw)
    moved = moved + 1
  end
end
return moved
"""

_REJECT = """
-- KEYS: own processing list, rejected list.  ARGV: raw, record.  One record per removed copy.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[2]) end
return 1
"""

_DEFER = """
-- KEYS: own processing list, delayed zset.  ARGV: raw, due time.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
"""


def instance_id(worker_name: str) -> str:
    """`name:pid:random`, unique per process start.

    A restarted process must never inherit the leases and processing list of its previous life
    (those are recovered like any dead worker's), so the id is not configurable; `WORKER_NAME`
    (default: the hostname) only prefixes it, which lets `healthcheck` find the workers of a host.
    """
    return f"{worker_name}:{os.getpid()}:{secrets.token_hex(3)}"


def run_token() -> str:
    """A new token for one admission of a job (see the module docstring)."""
    return secrets.token_hex(8)


def combined(*writes: Writes) -> Writes:
    """Several callers' writes as one, all inside the same transaction."""

    def write(pipe: Pipeline) -> None:
        for each in writes:
            each(pipe)

    return write


def no_writes(pipe: Pipeline) -> None:
    """An acknowledgement with nothing but the queue's own bookkeeping."""


@dataclass(eq=False)
class Delivery:
    """One claimed message, in this worker's hands from `JobQueue.claim` until `JobQueue.let_go`.

    The queue gives it out and takes it back with every acknowledgement, so the rest of the worker
    only reads ``raw`` (to parse it) and never moves the list element itself. ``token`` names the
    run that admitting it starts; it is drawn once per delivery, so an admission repeated after a
    lost reply is the same admission.
    """

    raw: bytes
    token: str = field(default_factory=run_token)


@dataclass(frozen=True)
class Run:
    """An admitted delivery: the job it runs and the attempt it is. Its outcome is acknowledged
    with it (`JobQueue.complete`, `fail`, `retry`, `release`)."""

    delivery: Delivery
    job_id: str
    attempt: int

    @property
    def token(self) -> str:
        return self.delivery.token


@dataclass(frozen=True)
class Admission:
    """Whether a claimed job should run (`run`, with the `Run`) or why not.

    `completed`, `failed` (this very delivery failed before) and `duplicate` (another live
    worker runs the job from its own copy of the same message): drop this copy. `busy`: another
    live worker holds the lease without such a copy; try again once it may have let go.
    """

    decision: Literal["run", "completed", "failed", "duplicate", "busy"]
    run: Run | None = None
    model_url: str = ""
    holder: str = ""


def raw_for_json(raw: bytes) -> dict[str, str]:
    """A raw list element inside a JSON record: as text when it is UTF-8, else base64."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(raw).decode("ascii")}


class JobQueue:
    """The queue operations of one worker instance; all state lives in Redis.

    It also knows which claimed messages its job loops hold (`claim` … `let_go`), which is what
    tells `reconcile` the elements of the processing list nobody works on.
    """

    def __init__(self, redis: Redis, settings: Settings, instance: str) -> None:
        self.redis = redis
        self.settings = settings
        self.instance = instance
        self.keys = RedisKeys(settings.key_prefix)
        self.queue = settings.queue_name
        self.priorities = PriorityLists.from_settings(settings)
        self.sources = self.priorities.of(self.queue)
        self.processing = self.keys.processing(instance)
        self.lease_ms = int(settings.heartbeat_ttl_s * 1000)
        self.needs_reconcile = False
        self._in_hand: Counter[bytes] = Counter()
        self._claims = 0
        self._no_claims = asyncio.Event()
        self._no_claims.set()
        self._claiming_allowed = asyncio.Event()
        self._claiming_allowed.set()
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._recover = redis.register_script(_RECOVER)
        self._promote = redis.register_script(_PROMOTE)
        self._hand_back = redis.register_script(_HAND_BACK)
        self._reject = redis.register_script(_REJECT)
        self._defer = redis.register_script(_DEFER)

    async def register(self) -> None:
        """Announce this instance: heartbeat first, so nobody recovers an empty list we then fill."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.heartbeat(self.instance), str(time.time()), px=self.lease_ms)
            pipe.sadd(self.keys.workers(), self.instance)
            await pipe.execute()

    async def heartbeat(self, job_ids: list[str]) -> None:
        """Extend this instance's heartbeat and the leases of the jobs it is running."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.heartbeat(self.instance), str(time.time()), px=self.lease_ms)
            pipe.sadd(self.keys.workers(), self.instance)
            await pipe.execute()
        if job_ids:
            await self._renew(keys=[self.keys.lease(job_id) for job_id in job_ids], args=[self.instance, self.lease_ms])

    async def claim(self, timeout_s: float) -> Delivery | None:
        """Move the next message into our processing list; None when the queues stayed empty.

        The lists are tried in kombu's order (priority step 0 first); BLMOVE can block on one key
        only, so it waits on the plain queue after polling every list once. A claimed message is
        in this worker's hands until `let_go`.
        """
        async with self._claim_slot():
            try:
                for source in self.sources:
                    raw = await self.redis.lmove(source, self.processing, "RIGHT", "LEFT")
                    if raw is not None:
                        break
                else:
                    raw = await self.redis.blmove(self.queue, self.processing, timeout_s, "RIGHT", "LEFT")
            except (RedisError, OSError):
                self.needs_reconcile = True  # the move may have happened without its reply reaching us
                raise
            if raw is None:
                return None
            self._in_hand[raw] += 1
            return Delivery(raw)

    def let_go(self, delivery: Delivery) -> None:
        """The job loop is done with a claimed message (acknowledged, or left for `reconcile`)."""
        self._in_hand[delivery.raw] -= 1
        if self._in_hand[delivery.raw] <= 0:
            del self._in_hand[delivery.raw]

    @asynccontextmanager
    async def _claim_slot(self) -> AsyncIterator[None]:
        """Claims run concurrently with each other but never while `reconcile` compares lists."""
        await self._claiming_allowed.wait()
        self._claims += 1
        self._no_claims.clear()
        try:
            yield
        finally:
            self._claims -= 1
            if self._claims == 0:
                self._no_claims.set()

    async def reconcile(self) -> int:
        """Hand back the elements of our processing list that no job loop holds; returns how many."""
        if not self.needs_reconcile:
            return 0
        self._claiming_allowed.clear()
        try:
            await self._no_claims.wait()
            listed = Counter(await self.redis.lrange(self.processing, 0, -1))
            orphans = list((listed - self._in_hand).elements())
            moved = int(await self._hand_back(keys=[self.processing, self.queue], args=orphans)) if orphans else 0
            self.needs_reconcile = False
            return moved
        finally:
            self._claiming_allowed.set()

    async def admit(self, delivery: Delivery, job_id: str, delivery_id: str, *, counted: bool = True) -> Admission:
        """Take the job's lease and count the attempt, unless it is done or running elsewhere.

        Repeating an admission of the same delivery answers the same (after a lost reply).
        `counted=False` starts a run without using up an attempt (its files are already uploaded).
        ``delivery_id`` is the producer's id of this delivery (Celery's task id).
        """
        decision, detail = await self._admit(
            keys=[self.keys.job(job_id), self.keys.lease(job_id)],
            args=[self.instance, self.lease_ms, self.keys.heartbeat(""), self.settings.idempotency_ttl_s,
                  self.keys.processing(""), delivery.raw, delivery.token, delivery_id, int(counted)],
        )
        decision = decision.decode()
        detail = detail.decode()
        if decision == "run":
            return Admission("run", run=Run(delivery, job_id, int(detail)))
        if decision == "completed":
            return Admission("completed", model_url=detail)
        return Admission(decision, holder=detail)

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Move a message that is not a job for us to the rejected list, with the reason."""
        raw = delivery.raw
        record = json.dumps({"reason": reason, "worker": self.instance, "at": time.time(), **raw_for_json(raw)})
        await self._reject(keys=[self.processing, self.settings.rejected_list], args=[raw, record])

    async def skip(self, delivery: Delivery) -> None:
        """Acknowledge a duplicate delivery without any other effect."""
        await self.redis.lrem(self.processing, 1, delivery.raw)

    async def defer(self, delivery: Delivery, due: float) -> None:
        """Hold a message until `due` without counting an attempt."""
        await self._defer(keys=[self.processing, self.keys.delayed()], args=[delivery.raw, due])

    async def schedule(self, delivery: Delivery, job_id: str, due: float, writes: Writes) -> bool:
        """Hold a job until its Celery ETA and record `writes` (its announcement) unless it is completed.

        False when the job is completed already (then the message is dropped and nothing written).
        """
        job, raw = self.keys.job(job_id), delivery.raw
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job)
                    completed = await pipe.hget(job, "outcome") == b"completed"
                    pipe.multi()
                    if not completed:
                        pipe.zadd(self.keys.delayed(), {raw: due})
                        writes(pipe)
                    pipe.lrem(self.processing, 1, raw)
                    await pipe.execute()
                    return not completed
                except WatchError:
                    continue

    async def complete(self, run: Run, model_url: str, writes: Writes) -> bool:
        """Mark the job completed (duplicates are skipped from now on) and acknowledge it.

        False when this run was overtaken by another (then `writes` did not run).
        """
        job = self.keys.job(run.job_id)

        def outcome(pipe: Pipeline) -> None:
            pipe.hset(job, mapping={"outcome": "completed", "model_url": model_url, "finished_at": time.time()})
            pipe.expire(job, self.settings.idempotency_ttl_s)

        return await self._acknowledge(run, writes, outcome, no_writes)

    async def fail(self, run: Run, delivery_id: str, reason: str, attempts: int, writes: Writes) -> bool:
        """Dead-letter the message with the reason; a later re-enqueue of the job starts afresh.

        Other copies of this same delivery are dropped from now on (`Admission.failed`).
        """
        job = self.keys.job(run.job_id)
        record = json.dumps(
            {"job_id": run.job_id, "reason": reason, "attempts": attempts, "worker": self.instance,
             "at": time.time(), **raw_for_json(run.delivery.raw)}
        )

        def outcome(pipe: Pipeline) -> None:
            pipe.lpush(self.settings.dead_letter_list, record)
            pipe.hset(job, mapping={"outcome": "failed", "attempts": 0, "failed_delivery": delivery_id})
            pipe.expire(job, self.settings.idempotency_ttl_s)

        return await self._acknowledge(run, writes, outcome, no_writes)

    async def retry(self, run: Run, delay_s: float, writes: Writes, *, counted: bool = True) -> bool:
        """Put the message in the delayed set, due after `delay_s`.

        `counted=False` gives the attempt back: the failure was an outage of a dependency
        (Triton down), not something the job did, so it must not use up the job's attempts.
        """
        due = time.time() + delay_s
        return await self._acknowledge(
            run, writes, no_writes if counted else self._give_back(run.job_id),
            lambda pipe: pipe.zadd(self.keys.delayed(), {run.delivery.raw: due}),
        )

    async def release(self, run: Run, *, counted: bool = False) -> bool:
        """Hand an unfinished job back to the front of the queue (shutdown, Redis outage).

        The attempt is given back unless `counted` (the run failed for a reason of its own).
        """
        return await self._acknowledge(
            run, no_writes, no_writes if counted else self._give_back(run.job_id),
            lambda pipe: pipe.rpush(self.queue, run.delivery.raw),
        )

    async def record_progress(self, job_id: str, token: str, writes: Writes, *, watching: Sequence[str] = ()) -> bool:
        """Apply ``writes`` (a progress report) while run ``token`` is the job's current one.

        Nothing is written (False is returned) once another run, or this run's own
        acknowledgement, has replaced it: a late update of a run that was overtaken must not make a
        finished job look unfinished. ``watching``: keys the writes must not race with.
        """
        job = self.keys.job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job, *watching)
                    if await pipe.hget(job, "run") != token.encode():
                        return False
                    pipe.multi()
                    writes(pipe)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    def _give_back(self, job_id: str) -> Writes:
        """The run's attempt is not counted."""
        return lambda pipe: pipe.hincrby(self.keys.job(job_id), "attempts", -1)

    async def _acknowledge(self, run: Run, writes: Writes, job_effect: Writes, message_effect: Writes) -> bool:
        """Settle one run: its outcome, the caller's writes and the removal of our copy, atomically.

        * The run still holds the job's current token: the outcome (`job_effect`) and `writes`
          apply, the token is retired, the lease dropped. Our copy of the message, when it is
          still in our processing list, is removed and `message_effect` (where the message goes
          next) applies; when it is not there, it was moved elsewhere already and goes on from there.
        * This acknowledgement was applied before (its reply was lost): nothing more happens.
        * Another run took the job over: only our copy is removed; False is returned.
        """
        job, lease = self.keys.job(run.job_id), self.keys.lease(run.job_id)
        raw, token = run.delivery.raw, run.token
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job, lease, self.processing)
                    current, acknowledged = await pipe.hmget(job, "run", "acked")
                    if acknowledged == token.encode():
                        return True
                    present = await pipe.lpos(self.processing, raw) is not None
                    ours = await pipe.get(lease) == self.instance.encode()
                    is_current = current == token.encode()
                    pipe.multi()
                    if is_current:
                        job_effect(pipe)
                        writes(pipe)
                        pipe.hset(job, "acked", token)
                        pipe.hdel(job, "run")
                        if ours:
                            pipe.delete(lease)
                        if present:
                            message_effect(pipe)
                    if present:
                        pipe.lrem(self.processing, 1, raw)
                    await pipe.execute()
                    return is_current
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
        return int(await self._hand_back(keys=[self.processing, self.queue], args=[]))

    async def unregister(self) -> None:
        """Leave cleanly: nothing of ours is left for the others to recover."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.heartbeat(self.instance))
            pipe.srem(self.keys.workers(), self.instance)
            await pipe.execute()

    async def stranded(self) -> Stranded:
        """Messages of this queue in priority lists the worker does not read (`jobs.priorities`)."""
        return await stranded_messages(self.redis, self.priorities, self.queue)

    async def depths(self) -> dict[str, int]:
        """Lengths of the lists an operator watches (for the queue-depth gauge): `queued` counts
        every priority list of the queue."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in self.sources:
                pipe.llen(name)
            pipe.zcard(self.keys.delayed())
            pipe.llen(self.settings.dead_letter_list)
            pipe.llen(self.settings.rejected_list)
            *queued, delayed, dead, rejected = await pipe.execute()
        return {"queued": sum(queued), "delayed": delayed, "dead": dead, "rejected": rejected}
