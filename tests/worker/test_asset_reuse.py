"""The asset cache's decisions, without servers: a hit copies, a failed copy or an unreadable cache
runs the model, only files of the address's model versions are offered, a TTL of 0 turns it off, and
jobs of one address at the same time run the model once (the others wait for its entry)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_worker.asset_cache import CACHE, AssetReuse, CachedAsset, Copies
from client_worker.metrics import Metrics
from client_worker.pipeline.photo_to_asset import Asset, AssetFile
from client_worker.pipeline.content_address import ContentAddress
from client_worker.storage import LocalStorage
from img2mesh.contract import ENCODER, ENSEMBLE
from tests.support.worker_jobs import MemoryCache

ADDRESS = ContentAddress("a" * 64, {ENSEMBLE: 1, ENCODER: 1})
SOURCE_STEM = "shop.myshopify.com/products/1/made"
STEM = "shop.myshopify.com/products/1/copied"


class Listener:
    def __init__(self) -> None:
        self.steps: list[str] = []

    async def started(self, step: str) -> None:
        self.steps.append(step)

    def finished(self, step: str, seconds: float) -> None:
        """Durations are not checked here."""


def made_asset(weights_version: str | None = "1") -> Asset:
    files = (AssetFile("model", ".glb", "model/gltf-binary", b"glTF"), AssetFile("poster", ".png", "image/png", b"PNG"))
    details: dict[str, Any] = {"face_count": 12, "weights_version": weights_version,
                               CACHE: {"hit": False, "address": ADDRESS.value, "models": ADDRESS.models}}
    return Asset(files, details)


def results(metrics: Metrics) -> dict[str, float]:
    return {result: metrics.registry.get_sample_value("img2mesh_worker_asset_cache_total", {"result": result}) or 0
            for result in ("hit", "miss", "copy_failed", "error")}


async def stored(storage: LocalStorage) -> None:
    for extension, data in ((".glb", b"glTF"), (".png", b"PNG")):
        await storage.upload(SOURCE_STEM + extension, data, "")


async def copies_for(reuse: AssetReuse, job_id: str) -> Copies | None:
    """What one job's lookup gives (None: run the model); the job's flight ends with it."""
    async with reuse.flight(job_id) as flight:
        return await flight.copies(ADDRESS, STEM, {}, Listener())


@dataclass
class WatchedCache(MemoryCache):
    """A `MemoryCache` that tells when a claim was refused (a job waits) and when a marker was renewed."""

    refused: asyncio.Event = field(default_factory=asyncio.Event)
    renewed: asyncio.Event = field(default_factory=asyncio.Event)
    renewals: int = 0

    async def claim(self, address: str, job_id: str, ttl_s: float) -> str | None:
        holder = await super().claim(address, job_id, ttl_s)
        if holder is not None:
            self.refused.set()
        return holder

    async def renew(self, address: str, job_id: str, ttl_s: float) -> bool:
        ours = await super().renew(address, job_id, ttl_s)
        self.renewals += 1
        self.renewed.set()
        return ours


async def renewed(cache: WatchedCache, times: int) -> None:
    """Until the cache saw ``times`` renewals (a few seconds at most: a test fails rather than hangs)."""
    async with asyncio.timeout(5):
        while cache.renewals < times:
            cache.renewed.clear()
            await cache.renewed.wait()


async def test_a_remembered_asset_is_copied_to_the_next_job(tmp_path: Path) -> None:
    storage, cache, metrics, listener = LocalStorage(tmp_path, "https://cdn.test"), MemoryCache(), Metrics(), Listener()
    reuse = AssetReuse(cache, storage, metrics, enabled=True)
    async with reuse.flight("made") as flight:
        assert await flight.copies(ADDRESS, SOURCE_STEM, {}, listener) is None
        assert cache.markers[ADDRESS.value][0] == "made"
        await stored(storage)
        await reuse.remember(made_asset(), SOURCE_STEM, "made")
    assert cache.markers == {}
    assert cache.entries[ADDRESS.value] == CachedAsset("made", SOURCE_STEM, {"model": ".glb", "poster": ".png"},
                                                       {"face_count": 12, "weights_version": "1"})
    timings: dict[str, float] = {}
    async with reuse.flight("copied") as flight:
        copies = await flight.copies(ADDRESS, STEM, timings, listener)
    assert copies is not None
    assert copies.urls == {"model": f"https://cdn.test/{STEM}.glb", "poster": f"https://cdn.test/{STEM}.png"}
    assert copies.details[CACHE] == {"hit": True, "address": ADDRESS.value, "source_job_id": "made"}
    assert (tmp_path / f"{STEM}.glb").read_bytes() == b"glTF" and listener.steps == ["copy"] and "copy" in timings
    await reuse.remember(Asset((), copies.details), STEM, "copied")  # a hit is not offered again
    assert cache.entries[ADDRESS.value].source_job_id == "made"
    assert results(metrics) == {"hit": 1, "miss": 1, "copy_failed": 0, "error": 0}


async def test_a_failed_copy_or_an_unreadable_cache_runs_the_model(tmp_path: Path) -> None:
    storage, cache, metrics = LocalStorage(tmp_path, "https://cdn.test"), MemoryCache(), Metrics()
    reuse = AssetReuse(cache, storage, metrics, enabled=True)
    await reuse.remember(made_asset(), SOURCE_STEM, "made")  # its files were never stored, or deleted since
    assert await copies_for(reuse, "copy-failed") is None
    cache.broken = True
    assert await copies_for(reuse, "broken") is None
    await reuse.remember(made_asset(), STEM, "again")  # logged, not raised
    assert results(metrics) == {"hit": 0, "miss": 0, "copy_failed": 1, "error": 2}


async def test_files_of_another_version_than_the_address_names_are_not_offered(tmp_path: Path) -> None:
    cache = MemoryCache()
    reuse = AssetReuse(cache, LocalStorage(tmp_path), Metrics(), enabled=True)
    await reuse.remember(made_asset(weights_version="2"), SOURCE_STEM, "rolled")
    assert cache.entries == {}
    await reuse.remember(made_asset(weights_version=None), SOURCE_STEM, "unversioned")  # nothing to compare
    assert cache.entries[ADDRESS.value].source_job_id == "unversioned"


async def test_a_ttl_of_zero_turns_the_cache_off(tmp_path: Path) -> None:
    storage, cache = LocalStorage(tmp_path), MemoryCache()
    await stored(storage)
    await AssetReuse(cache, storage, Metrics(), enabled=True).remember(made_asset(), SOURCE_STEM, "made")
    off = AssetReuse(cache, storage, Metrics(), enabled=False)
    assert await copies_for(off, "later") is None
    await off.remember(made_asset(), STEM, "later")
    assert cache.entries[ADDRESS.value].source_job_id == "made" and cache.markers == {}


async def test_jobs_of_one_address_at_the_same_time_run_the_model_once(tmp_path: Path) -> None:
    storage, cache, metrics = LocalStorage(tmp_path, "https://cdn.test"), WatchedCache(), Metrics()
    reuse = AssetReuse(cache, storage, metrics, enabled=True, making_ttl_s=0.3)
    async with reuse.flight("maker") as maker:
        assert await maker.copies(ADDRESS, SOURCE_STEM, {}, Listener()) is None
        waiter = asyncio.create_task(copies_for(reuse, "waiter"))
        await asyncio.wait_for(cache.refused.wait(), 5)
        await renewed(cache, 3)  # longer than the marker's TTL: renewing keeps it the maker's
        assert not waiter.done() and cache.markers[ADDRESS.value][0] == "maker"
        await stored(storage)
        await reuse.remember(made_asset(), SOURCE_STEM, "maker")
    copies = await asyncio.wait_for(waiter, 5)
    assert copies is not None and copies.details[CACHE]["source_job_id"] == "maker"
    assert (tmp_path / f"{STEM}.glb").read_bytes() == b"glTF" and cache.markers == {}
    assert results(metrics) == {"hit": 1, "miss": 1, "copy_failed": 0, "error": 0}


async def test_when_the_maker_fails_a_waiting_job_makes_the_asset(tmp_path: Path) -> None:
    cache = WatchedCache()
    reuse = AssetReuse(cache, LocalStorage(tmp_path), Metrics(), enabled=True)
    try:
        async with reuse.flight("maker") as maker:
            assert await maker.copies(ADDRESS, SOURCE_STEM, {}, Listener()) is None
            waiter = asyncio.create_task(waiting_maker(reuse, cache))
            await asyncio.wait_for(cache.refused.wait(), 5)
            raise RuntimeError("the model run failed")
    except RuntimeError:
        pass
    assert await asyncio.wait_for(waiter, 5) == "waiter"


async def test_when_the_maker_crashed_its_marker_lapses_and_a_waiting_job_makes_the_asset(tmp_path: Path) -> None:
    cache = MemoryCache()
    reuse = AssetReuse(cache, LocalStorage(tmp_path), Metrics(), enabled=True)
    assert await cache.claim(ADDRESS.value, "crashed", 0.2) is None  # never renewed nor released
    assert await asyncio.wait_for(waiting_maker(reuse, cache), 5) == "waiter"


async def waiting_maker(reuse: AssetReuse, cache: MemoryCache) -> str:
    """The job "waiter": its lookup finds nothing to copy; while it still runs, who holds the address."""
    async with reuse.flight("waiter") as flight:
        assert await flight.copies(ADDRESS, STEM, {}, Listener()) is None
        return cache.markers[ADDRESS.value][0]


async def test_with_a_broken_cache_jobs_at_the_same_time_all_run_the_model(tmp_path: Path) -> None:
    cache, metrics = MemoryCache(broken=True), Metrics()
    reuse = AssetReuse(cache, LocalStorage(tmp_path), metrics, enabled=True)
    assert await asyncio.gather(copies_for(reuse, "one"), copies_for(reuse, "two")) == [None, None]
    assert results(metrics) == {"hit": 0, "miss": 0, "copy_failed": 0, "error": 2}
