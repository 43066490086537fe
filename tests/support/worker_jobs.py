"""Helpers of the worker tests: the guide's test job, a job's webhooks, a worker process, waiting,
an asset cache in memory.

Shared by tests/worker/ (and its egress scenario); the servers they talk to are fixtures of
tests/support/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client_worker.asset_cache import CachedAsset, CacheError
from client_worker.config import Settings
from tests.support.webhook_receiver import WebhookReceiver

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes `python -m client_worker run` load exactly these settings."""
    env = {key: value for key, value in os.environ.items() if not key.isupper() or key in ("PATH", "HOME", "LANG")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = json.dumps(value) if isinstance(value, list) else str(value)
    env["PYTHONPATH"] = str(REPOSITORY_ROOT)
    return env


def start_worker_process(settings: Settings, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "client_worker", "run"], env=settings_environment(settings), cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=open(cwd / "worker.log", "ab"),  # noqa: SIM115
    )


def wait_until(predicate: Callable[[], object], timeout_s: float = 30, what: str = "condition") -> object:
    """Poll until `predicate()` is truthy and return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def guide_job(job_id: str, image_urls: object, **extra: object) -> dict[str, object]:
    """The guide's "Manually Queue a Test Job" message, verbatim apart from ids and URLs."""
    return {
        "task": "generate_3d_model",
        "id": str(uuid.uuid4()),
        "args": [],
        "kwargs": {
            "job_id": job_id,
            "shop": "test-shop.myshopify.com",
            "product_id": "gid://shopify/Product/123",
            "product_handle": "test-product",
            "image_urls": image_urls,
            "metadata": {},
            **extra,
        },
    }


def statuses(receiver: WebhookReceiver, job_id: str) -> list[str]:
    return [body["status"] for body in receiver.accepted(job_id)]


def final(receiver: WebhookReceiver, job_id: str, timeout_s: float = 60) -> dict[str, object]:
    """The job's terminal webhook body, once it arrived."""
    def terminal() -> dict[str, object] | None:
        done = [b for b in receiver.accepted(job_id) if b["status"] in ("completed", "failed")]
        return done[-1] if done else None

    return wait_until(terminal, timeout_s, f"a final webhook for {job_id}")  # type: ignore[return-value]


@dataclass
class MemoryCache:
    """`asset_cache.AssetCache` in dicts; ``broken`` makes every call fail as an unreachable store would."""

    entries: dict[str, CachedAsset] = field(default_factory=dict)
    markers: dict[str, tuple[str, float]] = field(default_factory=dict)
    """address -> (the job making it, when its marker lapses on `time.monotonic`)."""
    broken: bool = False

    async def find(self, address: str) -> CachedAsset | None:
        if self.broken:
            raise CacheError("the cache's store is unreachable")
        return self.entries.get(address)

    async def remember(self, address: str, cached: CachedAsset) -> None:
        if self.broken:
            raise CacheError("the cache's store is unreachable")
        self.entries[address] = cached

    async def claim(self, address: str, job_id: str, ttl_s: float) -> str | None:
        holder = self._holder(address)
        if holder not in (None, job_id):
            return holder
        self.markers[address] = (job_id, time.monotonic() + ttl_s)
        return None

    async def renew(self, address: str, job_id: str, ttl_s: float) -> bool:
        if self._holder(address) != job_id:
            return False
        self.markers[address] = (job_id, time.monotonic() + ttl_s)
        return True

    async def release(self, address: str, job_id: str) -> None:
        if self._holder(address) == job_id:
            del self.markers[address]

    def _holder(self, address: str) -> str | None:
        if self.broken:
            raise CacheError("the cache's store is unreachable")
        holder, lapses = self.markers.get(address, (None, 0.0))
        return holder if time.monotonic() < lapses else None
