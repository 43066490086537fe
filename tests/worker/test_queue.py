"""The reliable queue on a real redis-server: claim, acknowledge, recover, retry, dead-letter, dedup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import JobQueue, instance_id

RAW = json.dumps({"task": "generate_3d_model", "id": "t1", "kwargs": {"job_id": "job-1"}}).encode()


def nothing(pipe: object) -> None:
    """Writes that add nothing to the acknowledgement."""


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


async def new_queue(redis_client: Redis, settings: Settings, name: str = "w") -> JobQueue:
    queue = JobQueue(redis_client, settings, instance_id(name))
    await queue.register()
    return queue


async def test_claim_complete_then_duplicate_is_skipped(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW, RAW)  # the same job delivered twice
    raw = await queue.claim(0.1)
    assert raw == RAW
    assert await redis_client.lrange(queue.processing, 0, -1) == [RAW]
    admission = await queue.admit("job-1")
    assert (admission.decision, admission.attempt) == ("run", 1)

    await queue.complete(raw, "job-1", "https://cdn/x.glb", lambda pipe: pipe.set("staged", "yes"))
    assert await redis_client.get("staged") == b"yes"  # the caller's writes ride in the same transaction
    assert await redis_client.llen(queue.processing) == 0

    raw = await queue.claim(0.1)
    duplicate = await queue.admit("job-1")
    assert (duplicate.decision, duplicate.model_url) == ("completed", "https://cdn/x.glb")
    await queue.skip(raw)
    assert await redis_client.llen(queue.processing) == 0
    assert await queue.claim(0.05) is None


async def test_dead_worker_jobs_are_recovered_and_taken_over(redis_client: Redis, settings: Settings) -> None:
    dead = await new_queue(redis_client, settings, "dead")
    live = await new_queue(redis_client, settings, "live")
    await redis_client.lpush("celery", RAW)
    assert await dead.claim(0.1) == RAW
    assert (await dead.admit("job-1")).decision == "run"

    # While the first worker's heartbeat lives, its job is neither recovered nor run twice.
    assert await live.recover_dead_workers() == {}
    assert (await live.admit("job-1")).decision == "busy"

    await asyncio.sleep(settings.heartbeat_ttl_s + 0.2)  # the dead worker stops heartbeating
    await live.heartbeat([])
    assert await live.recover_dead_workers() == {dead.instance: 1}
    assert await redis_client.smembers(RedisKeys(settings.key_prefix).workers()) == {live.instance.encode()}
    assert await live.claim(0.1) == RAW
    admission = await live.admit("job-1")
    assert (admission.decision, admission.attempt) == ("run", 2)  # the crashed run counts as an attempt


async def test_heartbeat_keeps_a_long_job_alive(redis_client: Redis, settings: Settings) -> None:
    worker = await new_queue(redis_client, settings, "busy")
    other = await new_queue(redis_client, settings, "other")
    await redis_client.lpush("celery", RAW)
    await worker.claim(0.1)
    await worker.admit("job-1")
    for _ in range(6):  # 1.5 × the TTL
        await asyncio.sleep(settings.heartbeat_ttl_s / 4)
        await worker.heartbeat(["job-1"])
        await other.heartbeat([])
    assert await other.recover_dead_workers() == {}
    assert (await other.admit("job-1")).decision == "busy"


async def test_retry_waits_in_the_delayed_set(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"older")
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    await queue.claim(0.1)  # "older"
    raw = await queue.claim(0.1)
    await queue.admit("job-1")
    await queue.retry(raw, "job-1", 0.3, nothing)
    assert await queue.promote_due() == 0
    assert await redis_client.lrange("celery", 0, -1) == [b"newer"]
    await asyncio.sleep(0.35)
    assert await queue.promote_due() == 1
    assert await queue.claim(0.1) == RAW  # a due retry goes before newer work
    assert (await queue.admit("job-1")).attempt == 2


async def test_fail_dead_letters_and_a_reenqueue_starts_afresh(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    raw = await queue.claim(0.1)
    await queue.admit("job-1")
    await queue.fail(raw, "job-1", "image 404", 1, nothing)
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.dead_letter_list, 0, -1)]
    assert (record["job_id"], record["reason"], record["raw"]) == ("job-1", "image 404", RAW.decode())
    assert await redis_client.llen(queue.processing) == 0

    await redis_client.lpush("celery", RAW)  # the backend retries the job
    await queue.claim(0.1)
    admission = await queue.admit("job-1")
    assert (admission.decision, admission.attempt) == ("run", 1)


async def test_reject_keeps_the_message_and_the_reason(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", b"\xffgarbage")
    raw = await queue.claim(0.1)
    await queue.reject(raw, "message is not UTF-8 text")
    (record,) = [json.loads(item) for item in await redis_client.lrange(settings.rejected_list, 0, -1)]
    assert record["reason"] == "message is not UTF-8 text"
    assert record["raw_base64"] == "/2dhcmJhZ2U="
    assert await redis_client.llen(queue.processing) == 0


async def test_release_hands_the_job_back_uncounted(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery", RAW)
    await redis_client.lpush("celery", b"newer")
    raw = await queue.claim(0.1)
    await queue.admit("job-1")
    await queue.release(raw, "job-1")
    assert await queue.claim(0.1) == RAW
    assert (await queue.admit("job-1")).attempt == 1
    await queue.claim(0.1)
    assert await queue.hand_back_all() == 2
    assert await redis_client.lrange("celery", 0, -1) == [b"newer", RAW]


async def test_priority_lists_are_consumed(redis_client: Redis, settings: Settings) -> None:
    queue = await new_queue(redis_client, settings)
    await redis_client.lpush("celery\x06\x166", RAW)
    assert await queue.claim(0.1) == RAW
    assert (await queue.depths())["queued"] == 0


async def test_a_worker_wrongly_presumed_dead_cannot_complete_twice(redis_client: Redis, settings: Settings) -> None:
    stalled = await new_queue(redis_client, settings, "stalled")
    other = await new_queue(redis_client, settings, "other")
    await redis_client.lpush("celery", RAW)
    await stalled.claim(0.1)
    await stalled.admit("job-1")
    await redis_client.delete(RedisKeys(settings.key_prefix).heartbeat(stalled.instance))  # looks dead, is not
    assert await other.recover_dead_workers() == {stalled.instance: 1}
    raw = await other.claim(0.1)
    assert (await other.admit("job-1")).decision == "run"  # takes the lease over
    assert await other.complete(raw, "job-1", "https://cdn/first.glb", lambda pipe: pipe.incr("reported"))

    await redis_client.lpush(stalled.processing, RAW)  # the stalled worker's copy, as if recovery raced it
    late = await stalled.complete(RAW, "job-1", "https://cdn/second.glb", lambda pipe: pipe.incr("reported"))
    assert late is False
    assert await redis_client.get("reported") == b"1"  # one completion reported, not two
    assert await redis_client.hget(RedisKeys(settings.key_prefix).job("job-1"), "model_url") == b"https://cdn/first.glb"
    assert await redis_client.llen(stalled.processing) == 0
