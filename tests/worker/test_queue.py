"""The reliable queue on a real redis-server: claim, acknowledge, recover, retry, dead-letter, dedup,
and the run tokens that make every step safe to repeat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import Delivery, JobQueue, Run, instance_id, no_writes

RAW = json.dumps({"task": "generate_3d_model", "id": "t1", "kwargs": {"job_id": "job-1"}}).encode()
DELIVERY = "t1"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


async def new_queue(redis_client: Redis, settings: Settings, name: str = "w") -> JobQueue:
    queue = JobQueue(redis_client, settings, instance_id(name))
    await queue.register()
    return queue


async def claim_and_admit(queue: JobQueue, job_id: str = "job-1", delivery_id: str = DELIVERY) -> Run:
    delivery = await queue.claim(0.1)
    assert delivery is not None
    admission = await queue.admit(delivery, job_id, delivery_id)
    assert admission.decision == "run" and admission.run is not None, admission
    return admission.run


async def test_claim_complete_then_duplicate_is_skipped(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW, RAW)  # the same job delivered twice
    run = await claim_and_admit(queue)
    assert run.attempt == 1
    assert await redis_client.lrange(queue.processing, 0, -1) == [RAW]

    assert await queue.complete(run, "https://cdn/x.glb", lambda pipe: pipe.incr("staged"))
    assert await redis_client.get("staged") == b"1"  # the caller's writes ride in the same transaction
    assert await redis_client.llen(queue.processing) == 0

    # The reply was lost, say: repeating the acknowledgement changes nothing.
    assert await queue.complete(run, "https://cdn/x.glb", lambda pipe: pipe.incr("staged"))
    assert await redis_client.get("staged") == b"1"

    copy = await queue.claim(0.1)
    assert copy is not None
    duplicate = await queue.admit(copy, "job-1", DELIVERY)
    assert (duplicate.decision, duplicate.run, duplicate.model_url) == ("completed", None, "https://cdn/x.glb")
    await queue.skip(copy)
    assert await redis_client.llen(queue.processing) == 0
    assert await queue.claim(0.05) is None


async def test_an_admission_repeated_after_a_lost_reply_counts_once(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    delivery = await queue.claim(0.1)
    assert delivery is not None
    first = await queue.admit(delivery, "job-1", DELIVERY)
    again = await queue.admit(delivery, "job-1", DELIVERY)
    assert first.run is not None and again.run is not None
    assert (first.decision, first.run.attempt) == (again.decision, again.run.attempt) == ("run", 1)


async def test_a_lease_left_by_this_worker_does_not_block_its_own_retry(
    redis_client: Redis, settings: Settings
) -> None:
    """The cause of jobs lost on a Redis restart: a worker found its own stale lease "busy" and
    dropped the only copy. Its own lease never blocks it; the abandoned run is handed back uncounted."""
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    run = await claim_and_admit(queue)
    assert await queue.release(run)
    assert await queue.release(run)  # repeated after a lost reply: given back once
    queue.let_go(run.delivery)

    run = await claim_and_admit(queue)
    assert run.attempt == 1
    # The run above abandoned again, without any acknowledgement; the same message admitted anew:
    second = (await queue.admit(Delivery(run.delivery.raw), "job-1", DELIVERY)).run
    assert second is not None
    assert not await queue.complete(run, "https://cdn/old.glb", no_writes)  # overtaken
    assert await queue.complete(second, "https://cdn/new.glb", no_writes) is True


async def test_dead_worker_jobs_are_recovered_and_taken_over(redis_client: Redis, settings: Settings) -> None:
    dead = await new_queue(redis_client, settings, "dead")
    live = await new_queue(redis_client, settings, "live")
    await redis_client.lpush("celery", RAW, RAW)
    await claim_and_admit(dead)

    # While the first worker's heartbeat lives: a second copy of the same message is a duplicate
    # (the holder has its own copy); the job is neither recovered nor run twice.
    assert await live.recover_dead_workers() == {}
    copy = await live.claim(0.1)
    assert copy is not None
    assert (await live.admit(copy, "job-1", DELIVERY)).decision == "duplicate"
    assert (await live.admit(Delivery(b"another message of job-1"), "job-1", "t2")).decision == "busy"
    await live.skip(copy)

    await asyncio.sleep(settings.heartbeat_ttl_s + 0.2)  # the dead worker stops heartbeating
    await live.heartbeat([])
    assert await live.recover_dead_workers() == {dead.instance: 1}
    assert await redis_client.smembers(RedisKeys(settings.key_prefix).workers()) == {live.instance.encode()}
    assert (await claim_and_admit(live)).attempt == 2  # the crashed run counts as an attempt


async def test_heartbeat_keeps_a_long_job_alive(redis_client: Redis, settings: Settings) -> None:
    worker = await new_queue(redis_client, settings, "busy")
    other = await new_queue(redis_client, settings, "other")
    await redis_client.lpush("celery", RAW)
    await claim_and_admit(worker)
    for _ in range(6):  # 1.5 × the TTL
        await asyncio.sleep(settings.heartbeat_ttl_s / 4)
        await worker.heartbeat(["job-1"])
        await other.heartbeat([])
    assert await other.recover_dead_workers() == {}
    assert (await other.admit(Delivery(RAW), "job-1", DELIVERY)).decision == "duplicate"


async def test_retry_waits_in_the_delayed_set(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"older")
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    await queue.claim(0.1)  # "older"
    run = await claim_and_admit(queue)
    assert await queue.retry(run, 0.3, no_writes)
    assert await queue.retry(run, 0.3, no_writes)  # repeated: still one copy
    assert await queue.promote_due() == 0
    assert await redis_client.lrange("celery", 0, -1) == [b"newer"]
    await asyncio.sleep(0.35)
    assert await queue.promote_due() == 1
    assert (await claim_and_admit(queue)).attempt == 2  # a due retry goes before newer work


async def test_fail_dead_letters_and_only_a_new_delivery_runs_again(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    run = await claim_and_admit(queue)
    assert await queue.fail(run, DELIVERY, "image 404", 1, no_writes)
    assert await queue.fail(run, DELIVERY, "image 404", 1, no_writes)  # repeated: one record
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.dead_letter_list, 0, -1)]
    assert (record["job_id"], record["reason"], record["raw"]) == ("job-1", "image 404", RAW.decode())
    assert await redis_client.llen(queue.processing) == 0

    await redis_client.lpush("celery", RAW)  # another copy of the delivery that failed
    copy = await queue.claim(0.1)
    assert copy is not None
    assert (await queue.admit(copy, "job-1", DELIVERY)).decision == "failed"
    await queue.skip(copy)
    await redis_client.lpush("celery", RAW)  # the backend sends the job again, as a new task
    assert (await claim_and_admit(queue, delivery_id="t2")).attempt == 1


async def test_reject_keeps_the_message_and_the_reason(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"\xffgarbage")
    delivery = await queue.claim(0.1)
    assert delivery is not None
    await queue.reject(delivery, "message is not UTF-8 text")
    await queue.reject(delivery, "message is not UTF-8 text")  # repeated after a lost reply
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.rejected_list, 0, -1)]
    assert record["reason"] == "message is not UTF-8 text"
    assert record["raw_base64"] == "/2dhcmJhZ2U="
    assert await redis_client.llen(queue.processing) == 0


async def test_release_hands_the_job_back_uncounted(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    await queue.release(await claim_and_admit(queue))
    assert (await claim_and_admit(queue)).attempt == 1
    await queue.claim(0.1)
    assert await queue.hand_back_all() == 2
    assert await redis_client.lrange("celery", 0, -1) == [b"newer", RAW]


@pytest.mark.parametrize(
    ("steps", "separator", "lists"),
    [
        ([0, 3, 6, 9], "\x06\x16", ["celery\x06\x169", "celery\x06\x163", "celery\x06\x166"]),
        (list(range(10)), ":", ["celery:1", "celery:5", "celery:9", "celery:3"]),
    ],
)
async def test_every_priority_list_is_consumed_and_counted(
    redis_client: Redis, make_settings: Callable[..., Settings], steps: list[int], separator: str, lists: list[str]
) -> None:
    queue = await new_queue(redis_client, make_settings(priority_steps=steps, priority_separator=separator))
    for name in lists:
        await redis_client.lpush(name, name)
    assert (await queue.depths())["queued"] == len(lists)
    claimed = [(await queue.claim(0.05)).raw.decode() for _ in lists]
    assert claimed == sorted(lists, key=lambda name: int(name.rsplit(separator, 1)[1]))  # kombu's step order
    assert (await queue.depths())["queued"] == 0


async def test_reconcile_hands_back_only_what_no_job_loop_holds(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    held = await queue.claim(0.1)
    await redis_client.lpush(queue.processing, b"orphan", RAW)  # as after an LMOVE whose reply was lost
    assert await queue.reconcile() == 0  # nothing is suspected
    queue.needs_reconcile = True
    assert await queue.reconcile() == 2
    assert await redis_client.lrange(queue.processing, 0, -1) == [held.raw]
    assert sorted(await redis_client.lrange("celery", 0, -1)) == sorted([b"orphan", RAW])
    assert not queue.needs_reconcile


async def test_a_worker_wrongly_presumed_dead_cannot_complete_twice(redis_client: Redis, settings: Settings) -> None:
    stalled = await new_queue(redis_client, settings, "stalled")
    other = await new_queue(redis_client, settings, "other")
    await redis_client.lpush("celery", RAW)
    stalled_run = await claim_and_admit(stalled)
    await redis_client.delete(RedisKeys(settings.key_prefix).heartbeat(stalled.instance))  # looks dead, is not
    assert await other.recover_dead_workers() == {stalled.instance: 1}
    run = await claim_and_admit(other)  # takes the lease over
    assert await other.complete(run, "https://cdn/first.glb", lambda pipe: pipe.incr("reported"))

    await redis_client.lpush(stalled.processing, RAW)  # the stalled worker's copy, as if recovery raced it
    late = await stalled.complete(stalled_run, "https://cdn/second.glb", lambda pipe: pipe.incr("reported"))
    assert late is False
    assert await redis_client.get("reported") == b"1"  # one completion reported, not two
    assert await redis_client.hget(RedisKeys(settings.key_prefix).job("job-1"), "model_url") == b"https://cdn/first.glb"
    assert await redis_client.llen(stalled.processing) == 0
