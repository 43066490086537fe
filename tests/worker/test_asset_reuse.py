"""The asset cache's decisions, without servers: a hit copies, a failed copy or an unreadable cache
runs the model, only files of the address's model versions are offered, and a TTL of 0 turns it off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client_worker.asset_cache import CACHE, AssetReuse, CachedAsset
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


async def test_a_remembered_asset_is_copied_to_the_next_job(tmp_path: Path) -> None:
    storage, cache, metrics, listener = LocalStorage(tmp_path, "https://cdn.test"), MemoryCache(), Metrics(), Listener()
    reuse = AssetReuse(cache, storage, metrics, enabled=True)
    assert await reuse.copies(ADDRESS, STEM, {}, listener) is None
    await stored(storage)
    await reuse.remember(made_asset(), SOURCE_STEM, "made")
    assert cache.entries[ADDRESS.value] == CachedAsset("made", SOURCE_STEM, {"model": ".glb", "poster": ".png"},
                                                       {"face_count": 12, "weights_version": "1"})
    timings: dict[str, float] = {}
    copies = await reuse.copies(ADDRESS, STEM, timings, listener)
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
    assert await reuse.copies(ADDRESS, STEM, {}, Listener()) is None
    cache.broken = True
    assert await reuse.copies(ADDRESS, STEM, {}, Listener()) is None
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
    assert await off.copies(ADDRESS, STEM, {}, Listener()) is None
    await off.remember(made_asset(), STEM, "later")
    assert cache.entries[ADDRESS.value].source_job_id == "made"
