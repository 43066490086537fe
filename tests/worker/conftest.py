"""Fixtures of the worker tests: real redis-server, real webhook receiver, settings."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from redis.asyncio import Redis

from client_worker.config import Settings, load_settings
from client_worker.storage import Storage
from client_worker.worker import Worker
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import start_worker_process


@pytest.fixture
def make_settings(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings for a test: its Redis, local storage in tmp_path, fast timings; override by keyword."""
    monkeypatch.chdir(tmp_path)  # no stray .env is read

    def make(*, require_storage: bool = False, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": redis_url,
            "storage_backend": "local",
            "local_storage_dir": str(tmp_path / "storage"),
            "local_storage_public_url": "http://127.0.0.1:9/storage",
            "backend_url": "http://127.0.0.1:9",
            "metrics_port": 0,
            "heartbeat_interval_s": 0.25,
            "heartbeat_ttl_s": 1.5,
            "maintenance_interval_s": 0.2,
            "retry_base_delay_s": 0.2,
            "retry_max_delay_s": 1.0,
            "webhook_timeout_s": 2.0,
            "webhook_retry_base_delay_s": 0.05,
            "webhook_redelivery_max_delay_s": 0.5,
            "download_allowlist": ["127.0.0.0/8"],
        }
        values.update(overrides)
        return load_settings(require_storage=require_storage, **values)

    return make


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the test's (flushed) database, as the worker uses."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def backend_url(redis_url: str) -> str:
    """The producers' Celery result backend: another database of the same server."""
    return redis_url.rsplit("/", 1)[0] + "/1"


@pytest.fixture
def celery_producer(redis_url: str, backend_url: str) -> Iterator[Celery]:
    """The backend's Celery app (a real `celery` client) with a result backend, sending to our queue."""
    app = Celery("backend", broker=redis_url, backend=backend_url)
    app.conf.update(task_default_queue="celery", result_expires=600)
    yield app
    app.close()


@pytest.fixture
def receiver_settings(make_settings: Callable[..., Settings], webhook_receiver: WebhookReceiver) -> Settings:
    return make_settings(backend_url=webhook_receiver.url)


# --- end to end: a worker against real Triton, Supabase stand-in, image server, receiver -------
# (the servers' fixtures come from tests/support/, plugins of tests/conftest.py)

from tests.support.image_server import ImageServer, Route  # noqa: E402
from tests.support.supabase_server import SupabaseStorageFixture  # noqa: E402

E2E_RESOLUTION = 32
"""Grid resolution of end-to-end jobs (MAX_RESOLUTION): 0.3 s a job on two CPU cores instead of 5 s."""


@pytest.fixture(scope="session")
def product_photo() -> bytes:
    """A JPEG product shot on a plain background, as the backend would link."""
    import io

    from export.u2net_synthetic import synthetic_product_photo

    buffer = io.BytesIO()
    synthetic_product_photo().save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def photo_url(image_server: ImageServer, product_photo: bytes) -> str:
    """The photo's URL on the local image server, by host name (the only allowlisted one)."""
    image_server.routes["/photo.jpg"] = Route(body=product_photo, headers={"Content-Type": "image/jpeg"})
    return by_name(image_server.url("/photo.jpg"))


def by_name(url: str) -> str:
    """`http://127.0.0.1:P/x` as `http://localhost:P/x`: end-to-end workers allowlist the name
    `localhost` only, so that URLs with loopback addresses stay refused as in production."""
    return url.replace("//127.0.0.1:", "//localhost:", 1)


@pytest.fixture
def e2e_settings(
    make_settings: Callable[..., Settings],
    triton_server: object,
    webhook_receiver: WebhookReceiver,
    supabase_storage: SupabaseStorageFixture,
) -> Callable[..., Settings]:
    """Settings of a production-like worker (Supabase storage, SSRF rules) on the test servers."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "backend_url": webhook_receiver.url,
            "triton_url": triton_server.grpc_url,  # type: ignore[attr-defined]
            "triton_ready_timeout_s": 60,
            "storage_backend": "supabase",
            "supabase_url": supabase_storage.url,
            "supabase_service_role_key": supabase_storage.service_role_key,
            "supabase_bucket_name": supabase_storage.bucket,
            "download_allowlist": ["localhost"],
            "max_resolution": E2E_RESOLUTION,
            "concurrency": 2,
        }
        values.update(overrides)
        return make_settings(require_storage=True, **values)

    return make


class WorkerThread:
    """A `Worker` running in its own thread and event loop, so tests can block while it works."""

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        self.storage = storage
        self.worker: Worker | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> "WorkerThread":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the worker thread did not start")
        return self

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self.worker = Worker(self.settings, storage=self.storage)
            self._ready.set()
            await self.worker.run()

        try:
            asyncio.run(run())
        except BaseException as error:  # reported by stop()
            self.error = error
            self._ready.set()

    def stop(self, timeout_s: float = 60) -> None:
        if self._loop is not None and self.worker is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.request_stop)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerThread]]:
    """Start in-process workers (`start_worker(settings, storage=None)`); all are stopped
    (gracefully) after the test."""
    workers: list[WorkerThread] = []

    def start(settings: Settings, storage: Storage | None = None) -> WorkerThread:
        workers.append(WorkerThread(settings, storage).start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """Start real worker processes (`python -m client_worker run`, logging to tmp_path/worker.log);
    any still running after the test is killed."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        processes.append(start_worker_process(settings, tmp_path))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


# --- "exactly one final state": what the fault-injection and soak tests check -----------------


@dataclass
class Ledger:
    """Every job's final outcome as the backend and Redis see it, after a run with faults.

    The backend deduplicates webhook events by `X-Webhook-Id` (docs/webhooks.md), so a job's final
    events are its distinct completed/failed events.
    """

    jobs: list[str]
    finals: dict[str, list[dict[str, Any]]]
    statuses: dict[str, str]

    @classmethod
    def read(cls, jobs: list[str], receiver: WebhookReceiver, redis_client: redis.Redis) -> Ledger:
        """The webhooks received so far and the Redis statuses (waiting for Redis if it is down)."""
        finals = final_events(jobs, receiver)
        deadline = time.monotonic() + 30
        while True:
            try:
                statuses = {job_id: (redis_client.hget(f"img2mesh:status:{job_id}", "status") or b"").decode()
                            for job_id in jobs}
                return cls(jobs, finals, statuses)
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def summary(self) -> dict[str, int]:
        kinds = [[event["status"] for event in self.finals[job_id]] for job_id in self.jobs]
        return {
            "jobs": len(self.jobs),
            "completed": sum(outcome == ["completed"] for outcome in kinds),
            "failed": sum(outcome == ["failed"] for outcome in kinds),
            "lost": sum(not outcome for outcome in kinds),
            "duplicate_completions": sum(max(0, outcome.count("completed") - 1) for outcome in kinds),
            "more_than_one_final_state": sum(len(outcome) > 1 for outcome in kinds),
            "redis_disagrees": sum(
                bool(self.finals[job_id]) and self.statuses[job_id] != self.finals[job_id][-1]["status"]
                for job_id in self.jobs
            ),
        }


def final_events(jobs: list[str], receiver: WebhookReceiver) -> dict[str, list[dict[str, Any]]]:
    """Each job's distinct final (completed/failed) webhook events, deduplicated by X-Webhook-Id."""
    events: dict[str, dict[str, dict[str, Any]]] = {job_id: {} for job_id in jobs}
    for delivery in list(receiver.deliveries):
        body = delivery.json
        if delivery.answered < 300 and body["status"] in ("completed", "failed") and body["jobId"] in events:
            events[body["jobId"]][delivery.headers["X-Webhook-Id"]] = body
    return {job_id: list(found.values()) for job_id, found in events.items()}


def wait_for_ledger(jobs: list[str], receiver: WebhookReceiver, redis_client: redis.Redis,
                    timeout_s: float) -> Ledger:
    """Wait until every job has a final webhook (or the timeout passes), then settle and read."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(final_events(jobs, receiver).values()):
        time.sleep(0.2)
    time.sleep(1.5)  # a late second completion would arrive now
    return Ledger.read(jobs, receiver, redis_client)


def assert_nothing_left(redis_client: redis.Redis) -> None:
    """No message waits anywhere: queue, priority lists, delayed set, processing lists."""
    leftovers = {key.decode(): redis_client.llen(key) for key in redis_client.scan_iter("img2mesh:processing:*")}
    leftovers["celery"] = redis_client.llen("celery")
    leftovers["img2mesh:delayed"] = redis_client.zcard("img2mesh:delayed")
    assert not any(leftovers.values()), leftovers
