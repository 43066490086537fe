"""No second run for the same photo: a finished asset is offered to later jobs by its content address.

When a job's address (``client_worker.pipeline.content_address``: the photo's bytes, the resolved
preset, the size, the model and writer versions) names an asset some job already stored, the job
stores copies of those files under its own keys (the storage's copy) and completes without
running the model. The entries live in an `AssetCache`, which the job source implements (the Redis
queue's is ``client_worker.redis_asset_cache``), for `ASSET_CACHE_TTL_S`; a model version roll
changes the address, so it misses.

Nothing is lost through the cache, and what fails in it never fails a job:

* an entry that cannot be read (the store fails, `CacheError`) is a miss: the job runs the model;
* a copy that fails (the source files were deleted, the storage refuses or is down) falls back to
  a normal run, whose asset then replaces the entry;
* an entry that cannot be written is logged: the job's files are stored, so it completes.

Jobs of one address that run at the same time (variants sharing a photo, enqueued together) run the
model once: the first to miss claims the address (a "being made" marker with a short TTL that it
renews until its entry is written, `MAKING_TTL_S`), the others wait for its entry and copy it. A
maker that fails releases the address and one waiter claims it; a maker that crashed stops renewing
and its marker lapses. A marker that cannot be claimed (`CacheError`) runs the model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from client_worker.backoff import Backoff
from client_worker.errors import JobError
from client_worker.logs import OutageLog
from client_worker.metrics import Metrics
from client_worker.pipeline.photo_to_asset import Asset, StageListener, timed_stage
from client_worker.pipeline.content_address import ContentAddress
from client_worker.pipeline.stages import Stage
from client_worker.storage import Storage
from img2mesh.contract import ENCODER

log = logging.getLogger(__name__)

CACHE = "cache"
"""The key of the asset details (and the completed webhook's metadata) that says whether the files
came from the cache: ``{"hit": true, "address", "source_job_id"}``, or ``{"hit": false, "address",
"models"}`` (the model versions the address names) for files the job made."""


MAKING_TTL_S = 10.0
"""How long an address's "being made" marker outlives its maker's last renewal: a maker that
crashed holds the address up this long, then a waiting job makes the asset itself. Renewed every
third of it, so a maker survives two lost renewals (a Redis blip) before its marker lapses."""
WAITING = Backoff(base_s=0.05, max_s=1.0)
"""How soon a job waiting for another's asset looks again: soon at first (a copy takes a moment
and the maker may be nearly done), then at most once a second (two Redis reads per waiting job)."""


Storing = Callable[[Sequence[str]], Awaitable[None]]
"""Told the storage keys of a job's copies before they are written."""


class CacheError(Exception):
    """The cache could not be read or written (its store failed, or an entry is unreadable)."""


@dataclass(frozen=True)
class CachedAsset:
    """A stored asset: the job that made it, its files' key stem and extensions (by role), its details."""

    source_job_id: str
    stem: str
    extensions: dict[str, str]
    details: dict[str, Any]


class AssetCache(Protocol):
    """Where finished assets are found by content address."""

    async def find(self, address: str) -> CachedAsset | None:
        """The asset stored for ``address``, or None; raises `CacheError` when the cache cannot tell."""

    async def remember(self, address: str, cached: CachedAsset) -> None:
        """Offer ``cached`` to later jobs of ``address`` (replacing an entry); raises `CacheError`."""

    async def claim(self, address: str, job_id: str, ttl_s: float) -> str | None:
        """Mark ``address`` as being made by ``job_id`` for ``ttl_s``: None when it is the job's now
        (also when an earlier attempt of the job held it), else the job holding it; raises `CacheError`."""

    async def renew(self, address: str, job_id: str, ttl_s: float) -> bool:
        """Extend the job's marker to ``ttl_s`` from now; False when it is not the job's (any more);
        raises `CacheError`."""

    async def release(self, address: str, job_id: str) -> None:
        """Remove the marker of ``address`` if it is still the job's; raises `CacheError`."""


@dataclass(frozen=True)
class Copies:
    """A job's copies of a cached asset: the details to report and each copy's URL (by role)."""

    details: dict[str, Any]
    urls: dict[str, str]


class AssetReuse:
    """Looks a job's address up (waiting while another job makes it), copies a hit's files to the
    job's keys, remembers what jobs made."""

    def __init__(self, cache: AssetCache, storage: Storage, metrics: Metrics, enabled: bool,
                 making_ttl_s: float = MAKING_TTL_S) -> None:
        """``enabled``: False turns the cache off (``ASSET_CACHE_TTL_S=0``)."""
        self.cache = cache
        self.storage = storage
        self.metrics = metrics
        self.enabled = enabled
        self.making_ttl_s = making_ttl_s

    @asynccontextmanager
    async def flight(self, job_id: str) -> AsyncIterator[Flight]:
        """The job's use of the cache, for the time it makes, stores and remembers its asset: an
        address it claimed is released when that ends, whether the job succeeded or failed."""
        flight = Flight(self, job_id)
        try:
            yield flight
        finally:
            await flight.land()

    async def copy(self, cached: CachedAsset, address: ContentAddress, stem: str, timings_ms: dict[str, float],
                   listener: StageListener, storing: Storing | None = None) -> Copies | None:
        """Copies of ``cached``'s files under ``stem``, or None when copying failed: run the model.

        ``storing`` is awaited with the keys of the copies before any is written (the job notes them,
        to remove them should it fail)."""
        urls: dict[str, str] = {}
        if storing is not None:
            await storing([stem + extension for extension in cached.extensions.values()])
        try:
            async with timed_stage(Stage.COPY, timings_ms, listener):
                for role, extension in cached.extensions.items():
                    urls[role] = await self.storage.copy(cached.stem + extension, stem + extension)
        except JobError as error:
            log.warning("copying a cached asset failed; running the model", extra={"stem": stem, "error": str(error)})
            self.count("copy_failed")
            return None
        self.count("hit")
        log.info("copied the files of an earlier job instead of running the model",
                 extra={"stem": stem, "source_job_id": cached.source_job_id})
        hit = {"hit": True, "address": address.value, "source_job_id": cached.source_job_id}
        return Copies({**cached.details, CACHE: hit}, urls)

    def made(self, address: ContentAddress) -> dict[str, Any]:
        """What the `CACHE` key of the details of an asset made for ``address`` says."""
        return {"hit": False, "address": address.value, "models": address.models}

    async def remember(self, asset: Asset, stem: str, job_id: str) -> None:
        """Offer the files ``job_id`` made and stored under ``stem`` to later jobs of their address.

        Only files made by the TripoSR version the address names are offered: not those of a job
        that a roll (docs/runbook.md, "Model versions: export, roll forward, roll back") switched
        between its address and its run.
        """
        cache = asset.details.get(CACHE)  # None: files kept by an attempt of a release without the cache
        if not self.enabled or cache is None or cache["hit"]:
            return
        encoder, served = cache["models"].get(ENCODER), asset.details["weights_version"]
        if None not in (encoder, served) and str(encoder) != served:
            log.info("not caching an asset made during a model version roll", extra={"job_id": job_id})
            return
        details = {key: value for key, value in asset.details.items() if key != CACHE}
        cached = CachedAsset(job_id, stem, {file.role: file.extension for file in asset.files}, details)
        try:
            await self.cache.remember(cache["address"], cached)
        except CacheError as error:
            log.warning("the asset cache could not be written", extra={"job_id": job_id, "error": str(error)})
            self.count("error")

    def count(self, result: str) -> None:
        self.metrics.asset_cache.labels(result).inc()


class Flight:
    """One job's lookups of the cache; an address the job claimed stays marked (renewed in the
    background) until `land`."""

    def __init__(self, reuse: AssetReuse, job_id: str) -> None:
        self.reuse = reuse
        self.cache = reuse.cache
        self.job_id = job_id
        self._claim: tuple[str, asyncio.Task[None]] | None = None
        """The address this job claimed and the task renewing its marker."""

    async def copies(self, address: ContentAddress, stem: str, timings_ms: dict[str, float],
                     listener: StageListener, storing: Storing | None = None,
                     vet: Callable[[dict[str, Any]], None] | None = None) -> Copies | None:
        """Copies of the asset cached for ``address`` under ``stem``, or None: run the model
        (``storing``: as `AssetReuse.copy`'s).

        While another job makes the asset of ``address``, this waits for its entry (the job's
        deadline bounds the wait); a miss claims the address for this job. ``vet`` sees a hit's
        details before its files are copied, and may raise to refuse them for this job.
        """
        if not self.reuse.enabled:
            return None
        try:
            cached = await self._entry(address.value)
        except CacheError as error:
            log.warning("the asset cache could not be read; running the model", extra={"error": str(error)})
            self.reuse.count("error")
            return None
        if cached is None:
            self.reuse.count("miss")
            return None
        if vet is not None:
            vet(cached.details)
        return await self.reuse.copy(cached, address, stem, timings_ms, listener, storing)

    async def _entry(self, address: str) -> CachedAsset | None:
        """The entry of ``address``, once no other job is making it; None when this job claimed it."""
        looks = 0
        while (cached := await self.cache.find(address)) is None:
            holder = await self.cache.claim(address, self.job_id, self.reuse.making_ttl_s)
            if holder is None:
                self._claim = (address, asyncio.create_task(self._renew(address)))
                return await self.cache.find(address)  # written and released between the look and the claim
            if looks == 0:
                log.info("another job is making this asset; waiting for it", extra={"job_id": self.job_id,
                                                                                    "maker": holder})
            looks += 1
            await asyncio.sleep(WAITING.delay(looks))
        return cached

    async def _renew(self, address: str) -> None:
        outage = OutageLog(log, "the asset cache's marker could not be renewed")
        while True:
            await asyncio.sleep(self.reuse.making_ttl_s / 3)
            try:
                ours = await self.cache.renew(address, self.job_id, self.reuse.making_ttl_s)
            except CacheError as error:
                outage.failed(error, job_id=self.job_id)
                continue
            outage.succeeded()
            if not ours:
                log.warning("the asset cache's marker lapsed: another job may make the same asset",
                            extra={"job_id": self.job_id})
                return

    async def land(self) -> None:
        """Stop renewing the claimed address and release it (if it lapses instead, a waiter takes it)."""
        if self._claim is None:
            return
        address, renewing = self._claim
        renewing.cancel()
        try:
            await self.cache.release(address, self.job_id)
        except CacheError as error:
            log.warning("the asset cache's marker could not be released; it lapses in %g s",
                        self.reuse.making_ttl_s, extra={"error": str(error)})
