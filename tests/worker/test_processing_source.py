"""Processing serves any job source: an in-memory source, with no Redis at all, drives the same
processing through a completed, a failed and a retried job (real tritonserver, real storage)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from asset.real_size import RealSize
from client_worker.backoff import Backoff
from client_worker.config import Settings
from client_worker.errors import TransientJobError
from client_worker.jobs.job import Job
from client_worker.metrics import Metrics
from client_worker.pipeline.photo_to_asset import Asset, AssetPipeline
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.photo_choice import PhotoChoice
from client_worker.processing import Completed, JobProcessor, KeptFiles, StageFailure
from client_worker.retry_policy import GiveUp, Retry, RetryPolicy
from client_worker.storage import LocalStorage
from img2mesh.contract import ENCODER
from local_triton import LocalTriton
from tests.support.image_server import ImageServer
from tests.support.worker_jobs import MemoryCache
from tests.worker.conftest import E2E_RESOLUTION, by_name


@dataclass
class MemoryRecords:
    """`processing.AttemptRecords` in a dict: what a test driver, an HTTP endpoint or a table would do."""

    stages: list[tuple[str, str]] = field(default_factory=list)
    assets: dict[str, Asset] = field(default_factory=dict)
    urls: dict[str, dict[str, str]] = field(default_factory=dict)
    stored: dict[str, set[str]] = field(default_factory=dict)

    async def progress(self, job_id: str, token: str, metadata: dict[str, Any]) -> None:
        self.stages.append((job_id, metadata["stage"]))

    async def kept(self, job_id: str) -> KeptFiles | None:
        asset = self.assets.get(job_id)
        return None if asset is None else KeptFiles(asset, dict(self.urls.get(job_id, {})))

    async def keep(self, job_id: str, asset: Asset) -> None:
        self.assets[job_id] = asset

    async def keep_url(self, job_id: str, role: str, url: str) -> None:
        self.urls.setdefault(job_id, {})[role] = url

    async def storing(self, job_id: str, keys: Sequence[str]) -> None:
        self.stored.setdefault(job_id, set()).update(keys)


class StorageDownOnce(LocalStorage):
    """Local storage whose first upload fails as an outage would."""

    failed = False

    async def upload(self, key: str, data: bytes, content_type: str) -> str:
        if not self.failed:
            self.failed = True
            raise TransientJobError("storage is temporarily unavailable")
        return await super().upload(key, data, content_type)


@pytest.fixture
async def source(make_settings: Callable[..., Settings], triton_server: LocalTriton,
                 tmp_path: Path) -> AsyncIterator[Callable[..., tuple[JobProcessor, MemoryRecords]]]:
    settings = make_settings(download_allowlist=["localhost"], max_resolution=E2E_RESOLUTION)
    client = TritonMeshClient(triton_server.grpc_url, timeout_s=120)
    http = httpx.AsyncClient(trust_env=False)
    pipeline = AssetPipeline(client, max_resolution=E2E_RESOLUTION, default_size=RealSize(0.3))
    photo_choice = PhotoChoice.from_settings(settings, client, http)

    def make(storage: LocalStorage, cache: MemoryCache | None = None) -> tuple[JobProcessor, MemoryRecords]:
        records = MemoryRecords()
        return JobProcessor(settings, pipeline, photo_choice, storage, records, cache or MemoryCache(), Metrics()), records

    yield make
    await http.aclose()
    await client.close()


async def run_until_settled(processor: JobProcessor, job: Job) -> tuple[Completed | GiveUp, list[Retry]]:
    """The driver of a job source: attempts until an outcome, retrying as the worker's policy says."""
    policy, retries = RetryPolicy(3, Backoff(0.01, 0.01)), []
    for attempt in range(1, 4):
        try:
            return await processor.process(job, attempt, f"run-{attempt}"), retries
        except StageFailure as failure:
            decision = policy.after_failure(failure.error, attempt)
            if isinstance(decision, GiveUp):
                return decision, retries
            retries.append(decision)
    raise AssertionError("the policy allows three attempts")


def job(job_id: str, url: str) -> Job:
    return Job.model_validate({"job_id": job_id, "shop": "shop.myshopify.com", "product_id": "1",
                               "image_urls": [url]})


async def test_an_in_memory_source_completes_fails_and_retries_jobs(
    source: Callable[..., tuple[JobProcessor, MemoryRecords]], photo_url: str, image_server: ImageServer,
    tmp_path: Path,
) -> None:
    processor, records = source(LocalStorage(tmp_path / "store", "https://cdn.test/models"))
    completed, retries = await run_until_settled(processor, job("memory-ok", photo_url))
    assert isinstance(completed, Completed) and not retries
    assert completed.model_url == "https://cdn.test/models/shop.myshopify.com/products/1/memory-ok.glb"
    assert (tmp_path / "store/shop.myshopify.com/products/1/memory-ok.glb").read_bytes()[:4] == b"glTF"
    assert [stage for job_id, stage in records.stages if job_id == "memory-ok"] == [
        "download", "check", "inference", "encoding", "upload"]

    failed, retries = await run_until_settled(processor, job("memory-404", by_name(image_server.url("/none.jpg"))))
    assert isinstance(failed, GiveUp) and failed.kind == "permanent" and "HTTP 404" in failed.message
    assert not retries and "memory-404" not in records.assets

    flaky, flaky_records = source(StorageDownOnce(tmp_path / "flaky", "https://cdn.test/flaky"))
    retried, retries = await run_until_settled(flaky, job("memory-retry", photo_url))
    assert isinstance(retried, Completed) and len(retries) == 1 and retries[0].counted
    assert retried.metadata["attempts"] == 2
    # The second attempt reused the first one's files: no second download or inference.
    assert [stage for _, stage in flaky_records.stages] == ["download", "check", "inference", "encoding",
                                                           "upload", "upload"]


async def test_a_second_job_of_the_photo_copies_the_files_and_a_broken_cache_only_costs_a_model_run(
    source: Callable[..., tuple[JobProcessor, MemoryRecords]], photo_url: str, tmp_path: Path,
) -> None:
    cache = MemoryCache()
    processor, records = source(LocalStorage(tmp_path / "store", "https://cdn.test/models"), cache)
    first, _ = await run_until_settled(processor, job("made", photo_url))
    second, _ = await run_until_settled(processor, job("copied", photo_url))
    assert isinstance(first, Completed) and isinstance(second, Completed)
    (address,) = cache.entries
    assert first.metadata["cache"] == {"hit": False, "address": address, "models": first.metadata["cache"]["models"]}
    assert first.metadata["cache"]["models"][ENCODER] == int(first.metadata["weights_version"])
    assert second.metadata["cache"] == {"hit": True, "address": address, "source_job_id": "made"}
    assert [stage for job_id, stage in records.stages if job_id == "copied"] == ["download", "check", "copy"]
    assert {key: second.metadata[key] for key in ("face_count", "file_sizes_bytes", "mesh_info")} == {
        key: first.metadata[key] for key in ("face_count", "file_sizes_bytes", "mesh_info")}
    assert set(second.metadata["timings_ms"]) == {"download", "check", "copy", "total"}
    stored = tmp_path / "store/shop.myshopify.com/products/1"
    for extension in (".glb", ".usdz", ".png"):
        assert (stored / f"copied{extension}").read_bytes() == (stored / f"made{extension}").read_bytes()

    cache.broken = True
    third, _ = await run_until_settled(processor, job("uncached", photo_url))
    assert isinstance(third, Completed) and third.metadata["cache"]["hit"] is False
    assert [stage for job_id, stage in records.stages if job_id == "uncached"] == [
        "download", "check", "inference", "encoding", "upload"]
