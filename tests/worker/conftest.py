"""Fixtures of the worker tests: real redis-server, real webhook receiver, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from client_worker.config import Settings, load_settings
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver  # noqa: F401 (fixtures)


@pytest.fixture
def make_settings(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings for a test: its Redis, local storage in tmp_path, fast timings; override by keyword."""
    monkeypatch.chdir(tmp_path)  # no stray .env is read

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": redis_url,
            "storage_backend": "local",
            "local_storage_dir": str(tmp_path / "storage"),
            "local_storage_public_url": "http://127.0.0.1:9/storage",
            "backend_url": "http://127.0.0.1:9",
            "metrics_port": 0,
            "heartbeat_interval_s": 0.2,
            "heartbeat_ttl_s": 1.0,
            "maintenance_interval_s": 0.2,
            "retry_base_delay_s": 0.2,
            "retry_max_delay_s": 1.0,
            "webhook_timeout_s": 2.0,
            "webhook_retry_base_delay_s": 0.05,
            "webhook_redelivery_max_delay_s": 0.5,
            "download_allow_private_networks": True,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the test's (flushed) database, as the worker uses."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def receiver_settings(make_settings: Callable[..., Settings], webhook_receiver: WebhookReceiver) -> Settings:
    return make_settings(backend_url=webhook_receiver.url)
