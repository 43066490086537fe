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
from client_worker.jobs.queue import JobQueue, instance_id, no_writes, run_token

RAW = json.dumps({"task": "generate_3d_model", "id": "t1", "kwargs": {"job_id": "job-1"}}).encode()
DELIVERY = "t1"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


async def new_queue(redis_client: Redis, settings: Settings, name: str = "w") -> JobQueue:
    queue = JobQueue(redis_client, settings, instance_id(name))
    await queue.register()
    return queue


async def claim_and_admit(queue: JobQueue, job_id: str = "job-1", delivery: str = DELIVERY) -> tuple[bytes, str, int]:
    raw = await queue.claim(0.1)
    assert raw is not None
    token = run_token()
    admission = await queue.admit(job_id, raw, token, delivery)
    assert admission.decision == "run", admission
    return raw, token, admission.attempt


async def test_claim_complete_then_duplicate_is_skipped(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW, RAW)  # the same job delivered twice
    raw, token, attempt = await claim_and_admit(queue)
    assert attempt == 1
    assert await redis_client.lrange(queue.processing, 0, -1) == [RAW]

    assert await queue.complete(raw, "job-1", token, "https://cdn/x.glb", lambda pipe: pipe.incr("staged"))
    assert await redis_client.get("staged") == b"1"  # the caller's writes ride in the same transaction
    assert await redis_client.llen(queue.processing) == 0

    # The reply was lost, say: repeating the acknowledgement changes nothing.
    assert await queue.complete(raw, "job-1", token, "https://cdn/x.glb", lambda pipe: pipe.incr("staged"))
    assert await redis_client.get("staged") == b"1"

    raw = await queue.claim(0.1)
    duplicate = await queue.admit("job-1", raw, run_token(), DELIVERY)
    assert (duplicate.decision, duplicate.model_url) == ("completed", "https://cdn/x.glb")
    await queue.skip(raw)
    assert await redis_client.llen(queue.processing) == 0
    assert await queue.claim(0.05) is None


async def test_an_admission_repeated_after_a_lost_reply_counts_once(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    raw = await queue.claim(0.1)
    token = run_token()
    first = await queue.admit("job-1", raw, token, DELIVERY)
    again = await queue.admit("job-1", raw, token, DELIVERY)
    assert (first.decision, first.attempt) == (again.decision, again.attempt) == ("run", 1)


async def test_a_lease_left_by_this_worker_does_not_block_its_own_retry(
    redis_client: Redis, settings: Settings
) -> None:
    """The cause of jobs lost on a Redis restart: a worker found its own stale lease "busy" and
    dropped the only copy. Its own lease never blocks it; the abandoned run is handed back uncounted."""
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    raw, token, _ = await claim_and_admit(queue)
    assert await queue.release(raw, "job-1", token)
    assert await queue.release(raw, "job-1", token)  # repeated after a lost reply: given back once
    queue.let_go(raw)

    raw, token, attempt = await claim_and_admit(queue)
    assert attempt == 1
    second = run_token()  # the run above abandoned again, without any acknowledgement
    assert (await queue.admit("job-1", raw, second, DELIVERY)).decision == "run"
    assert not await queue.complete(raw, "job-1", token, "https://cdn/old.glb", no_writes)  # overtaken
    assert await queue.complete(raw, "job-1", second, "https://cdn/new.glb", no_writes) is True


async def test_dead_worker_jobs_are_recovered_and_taken_over(redis_client: Redis, settings: Settings) -> None:
    dead = await new_queue(redis_client, settings, "dead")
    live = await new_queue(redis_client, settings, "live")
    await redis_client.lpush("celery", RAW, RAW)
    await claim_and_admit(dead)

    # While the first worker's heartbeat lives: a second copy of the same message is a duplicate
    # (the holder has its own copy); the job is neither recovered nor run twice.
    assert await live.recover_dead_workers() == {}
    copy = await live.claim(0.1)
    assert (await live.admit("job-1", copy, run_token(), DELIVERY)).decision == "duplicate"
    assert (await live.admit("job-1", b"another message of job-1", run_token(), "t2")).decision == "busy"
    await live.skip(copy)

    await asyncio.sleep(settings.heartbeat_ttl_s + 0.2)  # the dead worker stops heartbeating
    await live.heartbeat([])
    assert await live.recover_dead_workers() == {dead.instance: 1}
    assert await redis_client.smembers(RedisKeys(settings.key_prefix).workers()) == {live.instance.encode()}
    _, _, attempt = await claim_and_admit(live)
    assert attempt == 2  # the crashed run counts as an attempt


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
    assert (await other.admit("job-1", RAW, run_token(), DELIVERY)).decision == "duplicate"


async def test_retry_waits_in_the_delayed_set(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"older")
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    await queue.claim(0.1)  # "older"
    raw, token, _ = await claim_and_admit(queue)
    assert await queue.retry(raw, "job-1", token, 0.3, no_writes)
    assert await queue.retry(raw, "job-1", token, 0.3, no_writes)  # repeated: still one copy
    assert await queue.promote_due() == 0
    assert await redis_client.lrange("celery", 0, -1) == [b"newer"]
    await asyncio.sleep(0.35)
    assert await queue.promote_due() == 1
    _, _, attempt = await claim_and_admit(queue)  # a due retry goes before newer work
    assert attempt == 2


async def test_fail_dead_letters_and_only_a_new_delivery_runs_again(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    raw, token, _ = await claim_and_admit(queue)
    assert await queue.fail(raw, "job-1", token, DELIVERY, "image 404", 1, no_writes)
    assert await queue.fail(raw, "job-1", token, DELIVERY, "image 404", 1, no_writes)  # repeated: one record
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.dead_letter_list, 0, -1)]
    assert (record["job_id"], record["reason"], record["raw"]) == ("job-1", "image 404", RAW.decode())
    assert await redis_client.llen(queue.processing) == 0

    await redis_client.lpush("celery", RAW)  # another copy of the delivery that failed
    copy = await queue.claim(0.1)
    assert (await queue.admit("job-1", copy, run_token(), DELIVERY)).decision == "failed"
    await queue.skip(copy)
    await redis_client.lpush("celery", RAW)  # the backend sends the job again, as a new task
    raw = await queue.claim(0.1)
    admission = await queue.admit("job-1", raw, run_token(), "t2")
    assert (admission.decision, admission.attempt) == ("run", 1)


async def test_reject_keeps_the_message_and_the_reason(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"\xffgarbage")
    raw = await queue.claim(0.1)
    await queue.reject(raw, "message is not UTF-8 text")
    await queue.reject(raw, "message is not UTF-8 text")  # repeated after a lost reply
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.rejected_list, 0, -1)]
    assert record["reason"] == "message is not UTF-8 text"
    assert record["raw_base64"] == "/2dhcmJhZ2U="
    assert await redis_client.llen(queue.processing) == 0


async def test_release_hands_the_job_back_uncounted(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    raw, token, _ = await claim_and_admit(queue)
    await queue.release(raw, "job-1", token)
    _, _, attempt = await claim_and_admit(queue)
    assert attempt == 1
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
    claimed = [(await queue.claim(0.05)).decode() for _ in lists]
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
    assert await redis_client.lrange(queue.processing, 0, -1) == [held]
    assert sorted(await redis_client.lrange("celery", 0, -1)) == sorted([b"orphan", RAW])
    assert not queue.needs_reconcile


async def test_a_worker_wrongly_presumed_dead_cannot_complete_twice(redis_client: Redis, settings: Settings) -> None:
    stalled = await new_queue(redis_client, settings, "stalled")
    other = await new_queue(redis_client, settings, "other")
    await redis_client.lpush("celery", RAW)
    _, stalled_token, _ = await claim_and_admit(stalled)
    await redis_client.delete(RedisKeys(settings.key_prefix).heartbeat(stalled.instance))  # looks dead, is not
    assert await other.recover_dead_workers() == {stalled.instance: 1}
    raw, token, _ = await claim_and_admit(other)  # takes the lease over
    assert await other.complete(raw, "job-1", token, "https://cdn/first.glb", lambda pipe: pipe.incr("reported"))

    await redis_client.lpush(stalled.processing, RAW)  # the stalled worker's copy, as if recovery raced it
    late = await stalled.complete(RAW, "job-1", stalled_token, "https://cdn/second.glb",
                                  lambda pipe: pipe.incr("reported"))
    assert late is False
    assert await redis_client.get("reported") == b"1"  # one completion reported, not two
    assert await redis_client.hget(RedisKeys(settings.key_prefix).job("job-1"), "model_url") == b"https://cdn/first.glb"
    assert await redis_client.llen(stalled.processing) == 0
