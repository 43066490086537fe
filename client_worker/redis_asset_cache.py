"""The Redis queue's `asset_cache.AssetCache`: one JSON string per content address, kept `ASSET_CACHE_TTL_S`.

It lives in the same Redis as the queue, so it survives a worker restart; `SCAN MATCH
img2mesh:asset-cache:*` lists it and deleting those keys flushes it (docs/runbook.md, "Asset cache").
"""

from __future__ import annotations

import json
from dataclasses import asdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from client_worker.asset_cache import CachedAsset, CacheError
from client_worker.jobs.keys import RedisKeys


class RedisAssetCache:
    """Entries under `RedisKeys.asset_cache`; Redis errors and unreadable entries are `CacheError`s."""

    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def find(self, address: str) -> CachedAsset | None:
        try:
            stored = await self.redis.get(self.keys.asset_cache(address))
        except RedisError as error:
            raise CacheError(f"reading the asset cache failed: {error}") from error
        if stored is None:
            return None
        try:
            return CachedAsset(**json.loads(stored))
        except (ValueError, TypeError) as error:
            raise CacheError(f"the asset cache's entry {address} is unreadable: {error}") from error

    async def remember(self, address: str, cached: CachedAsset) -> None:
        try:
            await self.redis.set(self.keys.asset_cache(address), json.dumps(asdict(cached)), ex=self.ttl_s)
        except RedisError as error:
            raise CacheError(f"writing the asset cache failed: {error}") from error
