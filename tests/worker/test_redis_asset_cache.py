"""The Redis asset cache on a real redis-server: entries round-trip with their TTL, and whatever
Redis cannot give (an unreadable entry, no server) is a `CacheError`, which processing treats as a miss."""

from __future__ import annotations

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
    await unreachable.aclose()
