"""The Redis asset cache on a real redis-server: entries round-trip with their TTL, whatever Redis
cannot give (an unreadable entry, no server) is a `CacheError`, which processing treats as a miss,
and an address's "being made" marker is one job's at a time until it is released or lapses."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from client_worker.asset_cache import CachedAsset, CacheError
from client_worker.jobs.keys import RedisKeys
from client_worker.redis_asset_cache import RedisAssetCache
from local_triton import free_port

CACHED = CachedAsset("job-1", "shop.myshopify.com/products/1/job-1", {"model": ".glb", "usdz": ".usdz"},
                     {"preset": "balanced", "face_count": 12, "texture": None})


async def test_an_entry_round_trips_and_expires_after_the_ttl(redis_client: Redis) -> None:
    cache = RedisAssetCache(redis_client, RedisKeys("img2mesh"), ttl_s=3600)
    assert await cache.find("a" * 64) is None
    await cache.remember("a" * 64, CACHED)
    assert await cache.find("a" * 64) == CACHED
    assert 3590 <= await redis_client.ttl("img2mesh:asset-cache:" + "a" * 64) <= 3600
    replacement = CachedAsset("job-2", "shop.myshopify.com/products/1/job-2", CACHED.extensions, CACHED.details)
    await cache.remember("a" * 64, replacement)
    assert await cache.find("a" * 64) == replacement


@pytest.mark.parametrize("stored", [b"not json", b'{"source_job_id": "job-1"}', b"[1, 2]"])
async def test_an_unreadable_entry_is_a_cache_error(redis_client: Redis, stored: bytes) -> None:
    await redis_client.set("img2mesh:asset-cache:bad", stored)
    with pytest.raises(CacheError, match="entry bad is unreadable"):
        await RedisAssetCache(redis_client, RedisKeys("img2mesh"), ttl_s=60).find("bad")


async def test_an_unreachable_redis_is_a_cache_error_both_ways() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}", retry=Retry(NoBackoff(), 0))
    cache = RedisAssetCache(unreachable, RedisKeys("img2mesh"), ttl_s=60)
    with pytest.raises(CacheError, match="reading the asset cache failed"):
        await cache.find("a" * 64)
    with pytest.raises(CacheError, match="writing the asset cache failed"):
        await cache.remember("a" * 64, CACHED)
    with pytest.raises(CacheError, match="claiming an address of the asset cache failed"):
        await cache.claim("a" * 64, "job-1", 10)
    with pytest.raises(CacheError, match="renewing an address of the asset cache failed"):
        await cache.renew("a" * 64, "job-1", 10)
    with pytest.raises(CacheError, match="releasing an address of the asset cache failed"):
        await cache.release("a" * 64, "job-1")
    await unreachable.aclose()


async def test_a_claim_is_exclusive_and_only_its_holder_renews_or_releases_it(redis_client: Redis) -> None:
    cache = RedisAssetCache(redis_client, RedisKeys("img2mesh"), ttl_s=60)
    marker = "img2mesh:asset-making:" + "a" * 64
    assert await cache.claim("a" * 64, "job-1", 10) is None
    assert await cache.claim("a" * 64, "job-2", 10) == "job-1"
    assert await cache.claim("a" * 64, "job-1", 10) is None  # an earlier attempt of the job held it
    assert 9000 <= await redis_client.pttl(marker) <= 10000
    assert await cache.renew("a" * 64, "job-2", 60) is False
    await cache.release("a" * 64, "job-2")
    assert await redis_client.get(marker) == b"job-1" and await redis_client.pttl(marker) <= 10000
    assert await cache.renew("a" * 64, "job-1", 60) is True
    assert 59000 <= await redis_client.pttl(marker) <= 60000
    await cache.release("a" * 64, "job-1")
    assert await redis_client.exists(marker) == 0
    assert await cache.renew("a" * 64, "job-1", 60) is False  # released: nothing to renew


async def test_a_claim_lapses_after_its_ttl_and_another_job_may_take_it(redis_client: Redis) -> None:
    cache = RedisAssetCache(redis_client, RedisKeys("img2mesh"), ttl_s=60)
    assert await cache.claim("a" * 64, "crashed", 0.1) is None
    while await cache.claim("a" * 64, "next", 10) is not None:
        await asyncio.sleep(0.02)
    assert await cache.renew("a" * 64, "crashed", 10) is False
    assert await redis_client.get("img2mesh:asset-making:" + "a" * 64) == b"next"
