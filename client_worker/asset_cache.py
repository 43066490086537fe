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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from client_worker.errors import JobError
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


@dataclass(frozen=True)
class Copies:
    """A job's copies of a cached asset: the details to report and each copy's URL (by role)."""

    details: dict[str, Any]
    urls: dict[str, str]


class AssetReuse:
    """Looks a job's address up, copies a hit's files to the job's keys, remembers what jobs made."""

    def __init__(self, cache: AssetCache, storage: Storage, metrics: Metrics, enabled: bool) -> None:
        """``enabled``: False turns the cache off (``ASSET_CACHE_TTL_S=0``)."""
        self.cache = cache
        self.storage = storage
        self.metrics = metrics
        self.enabled = enabled

    async def copies(self, address: ContentAddress, stem: str, timings_ms: dict[str, float],
                     listener: StageListener) -> Copies | None:
        """Copies of the asset cached for ``address`` under ``stem``, or None: run the model."""
        if not self.enabled:
            return None
        try:
            cached = await self.cache.find(address.value)
        except CacheError as error:
            log.warning("the asset cache could not be read; running the model", extra={"error": str(error)})
            self._count("error")
            return None
        if cached is None:
            self._count("miss")
            return None
        urls: dict[str, str] = {}
        try:
            async with timed_stage(Stage.COPY, timings_ms, listener):
                for role, extension in cached.extensions.items():
                    urls[role] = await self.storage.copy(cached.stem + extension, stem + extension)
        except JobError as error:
            log.warning("copying a cached asset failed; running the model", extra={"stem": stem, "error": str(error)})
            self._count("copy_failed")
            return None
        self._count("hit")
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
            self._count("error")

    def _count(self, result: str) -> None:
        self.metrics.asset_cache.labels(result).inc()
