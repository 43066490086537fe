"""The Redis queue's `asset_cache.AssetCache`: one JSON string per content address, kept `ASSET_CACHE_TTL_S`,
and one "being made" marker per address a job is making (`RedisKeys.asset_making`).

It lives in the same Redis as the queue, so it survives a worker restart and every worker shares
it; `SCAN MATCH img2mesh:asset-cache:*` lists it and deleting those keys flushes it
(docs/runbook.md, "Asset cache").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from client_worker.asset_cache import CachedAsset, CacheError
from client_worker.jobs.keys import RedisKeys

_CLAIM = """
-- KEYS: the address's marker.  ARGV: job id, ttl ms.  Returns nil when it is the job's now (also
-- when an earlier attempt of the job held it), else the job holding it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

_RENEW = """
-- KEYS: the address's marker.  ARGV: job id, ttl ms.  Returns 1 when it was still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
-- KEYS: the address's marker.  ARGV: job id.  Deletes it only while it is ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisAssetCache:
    """Entries under `RedisKeys.asset_cache`; Redis errors and unreadable entries are `CacheError`s."""

    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def find(self, address: str) -> CachedAsset | None:
        with _cache_error("reading the asset cache"):
            stored = await self.redis.get(self.keys.asset_cache(address))
        if stored is None:
            return None
        try:
            return CachedAsset(**json.loads(stored))
        except (ValueError, TypeError) as error:
            raise CacheError(f"the asset cache's entry {address} is unreadable: {error}") from error

    async def remember(self, address: str, cached: CachedAsset) -> None:
        with _cache_error("writing the asset cache"):
            await self.redis.set(self.keys.asset_cache(address), json.dumps(asdict(cached)), ex=self.ttl_s)

    async def claim(self, address: str, job_id: str, ttl_s: float) -> str | None:
        with _cache_error("claiming an address of the asset cache"):
            holder = await self._claim(keys=[self.keys.asset_making(address)], args=[job_id, _ms(ttl_s)])
        return None if holder is None else holder.decode()

    async def renew(self, address: str, job_id: str, ttl_s: float) -> bool:
        with _cache_error("renewing an address of the asset cache"):
            return bool(await self._renew(keys=[self.keys.asset_making(address)], args=[job_id, _ms(ttl_s)]))

    async def release(self, address: str, job_id: str) -> None:
        with _cache_error("releasing an address of the asset cache"):
            await self._release(keys=[self.keys.asset_making(address)], args=[job_id])


@contextmanager
def _cache_error(doing: str) -> Iterator[None]:
    """A Redis error while ``doing`` as a `CacheError`: the job then runs the model, whatever Redis did."""
    try:
        yield
    except RedisError as error:
        raise CacheError(f"{doing} failed: {error}") from error


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
