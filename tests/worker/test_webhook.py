"""The status store and the webhook sender against a real webhook receiver and redis-server:
format, signature, outbox."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from client_worker.attempt_records import RedisAttemptRecords
from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import JobQueue, Run, instance_id
from client_worker.metrics import Metrics
from client_worker.redaction import Redaction
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender
from client_worker.storage import LocalStorage
from tests.support.webhook_receiver import WebhookReceiver


@dataclass
class Reporter:
    """A worker's status side on the real queue: a job `begin`s as the consumer starts one (claimed
    and admitted, so its run is current), progress goes through the attempt records, and a final
    status of a begun job is written by the queue's own acknowledgement."""

    store: StatusStore
    sender: WebhookSender
    queue: JobQueue
    records: RedisAttemptRecords
    runs: dict[str, Run] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    """The run token of each job that `begin`s, also after its final status (late progress uses it)."""

    async def begin(self, job_id: str) -> None:
        await self.queue.redis.lpush(self.queue.queue, json.dumps({"job_id": job_id}))
        delivery = await self.queue.claim(1)
        assert delivery is not None
        run = (await self.queue.admit(delivery, job_id, job_id)).run
        assert run is not None
        self.runs[job_id] = run
        self.tokens[job_id] = run.token

    async def report(self, event: StatusEvent) -> None:
        if event.status == "processing":
            await self.records.progress(event.job_id, self.tokens[event.job_id], event.metadata or {})
        elif await self.record(event):
            self.sender.deliver_soon(event.job_id)

    async def record(self, event: StatusEvent) -> bool:
        """Write a final status: through the queue's acknowledgement for a job that `begin`s."""
        run = self.runs.pop(event.job_id, None)
        if run is None:  # a status of a job this worker never ran: written as it is
            async with self.queue.redis.pipeline(transaction=True) as pipe:
                self.store.writes(event)(pipe)
                await pipe.execute()
            return True
        if event.status == "completed":
            return await self.queue.complete(run, event.model_url or "", self.store.writes(event))
        return await self.queue.fail(run, event.job_id, event.error_message or "", 1, self.store.writes(event))

    async def latest(self, job_id: str) -> dict[str, str]:
        return await self.store.latest(job_id)

    async def deliver_latest(self, job_id: str) -> bool:
        return await self.sender.deliver_latest(job_id)

    async def redeliver_due(self) -> int:
        return await self.sender.redeliver_due()

    async def drain(self, timeout_s: float) -> None:
        await self.sender.drain(timeout_s)


@pytest.fixture
async def make_reporter(redis_client: Redis, tmp_path: Path) -> AsyncIterator[Callable[[Settings], Reporter]]:
    clients: list[httpx.AsyncClient] = []

    def make(settings: Settings) -> Reporter:
        clients.append(httpx.AsyncClient())
        sender = WebhookSender(redis_client, settings, clients[-1], Metrics())
        queue = JobQueue(redis_client, settings, instance_id(settings.worker_name))
        store = StatusStore(redis_client, queue.keys, settings.status_ttl_s, sender.delivery_window_s,
                            settings.status_text_max_chars, Redaction.of(settings))
        return Reporter(store, sender, queue, RedisAttemptRecords(redis_client, queue, store, sender,
                                                                         LocalStorage(tmp_path)))

    yield make
    for client in clients:
        await client.aclose()


async def _next_message(pubsub: PubSub, within_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=1)
        if message is not None:
            return message
    raise AssertionError(f"nothing arrived on the status channel within {within_s:.0f} s")


async def test_guide_payload_redis_hash_and_pubsub(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter],
    webhook_receiver: WebhookReceiver, redis_client: Redis,
) -> None:
    reporter = make_reporter(receiver_settings)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(RedisKeys(receiver_settings.key_prefix).status_channel())
    # Publish only once Redis confirms the subscription, however long a loaded machine takes.
    confirmation = await _next_message(pubsub)
    assert confirmation["type"] == "subscribe"

    event = StatusEvent("job-1", "completed", model_url="https://cdn/x.glb", metadata={"faces": 12})
    await reporter.report(event)
    published = await _next_message(pubsub)
    assert json.loads(published["data"])["status"] == "completed"
    await pubsub.aclose()

    await reporter.drain(5)
    (delivery,) = webhook_receiver.deliveries
    assert delivery.path == "/api/models/webhook/update"
    assert delivery.json == {"jobId": "job-1", "status": "completed", "modelUrl": "https://cdn/x.glb",
                             "metadata": {"faces": 12}}
    assert delivery.headers["Content-Type"] == "application/json"
    assert "X-Webhook-Signature" not in delivery.headers  # no secret configured
    status = await reporter.latest("job-1")
    assert (status["status"], status["model_url"]) == ("completed", "https://cdn/x.glb")
    assert status["delivery"] == "delivered"
    assert await redis_client.hlen(RedisKeys(receiver_settings.key_prefix).outbox()) == 0


async def test_failed_event_carries_the_error_message(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter], webhook_receiver: WebhookReceiver,
) -> None:
    reporter = make_reporter(receiver_settings)
    await reporter.report(StatusEvent("job-2", "failed", error_message="image URL returned HTTP 404"))
    await reporter.drain(5)
    assert webhook_receiver.accepted() == [
        {"jobId": "job-2", "status": "failed", "errorMessage": "image URL returned HTTP 404"}
    ]


async def test_signature_verifies_over_timestamp_and_raw_body(
    make_settings: Callable[..., Settings], make_reporter: Callable[[Settings], Reporter],
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = "whsec-test-3f9a"
    reporter = make_reporter(make_settings(backend_url=webhook_receiver.url, webhook_secret=secret))
    await reporter.begin("job-3")
    await reporter.report(StatusEvent("job-3", "processing", metadata={"stage": "download", "progress": 5}))
    await reporter.drain(5)
    (delivery,) = webhook_receiver.deliveries
    timestamp = delivery.headers["X-Webhook-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 10
    # The verification docs/webhooks.md gives the backend, done independently here.
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["X-Webhook-Signature"], f"v1={expected}")
    tampered = hmac.new(secret.encode(), f"{timestamp}.".encode() + delivery.body + b" ", hashlib.sha256).hexdigest()
    assert tampered != expected


async def test_transient_errors_are_retried(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter], webhook_receiver: WebhookReceiver,
) -> None:
    reporter = make_reporter(receiver_settings)
    webhook_receiver.fail_next(2, status=503)
    await reporter.record(StatusEvent("job-4", "completed", model_url="u"))
    assert await reporter.deliver_latest("job-4") is True
    assert [d.answered for d in webhook_receiver.deliveries] == [503, 503, 200]
    ids = {d.headers["X-Webhook-Id"] for d in webhook_receiver.deliveries}
    assert len(ids) == 1  # one event id across retries: the receiver's dedup key


async def test_client_error_is_not_retried(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter], webhook_receiver: WebhookReceiver,
    redis_client: Redis,
) -> None:
    reporter = make_reporter(receiver_settings)
    webhook_receiver.fail_next(1, status=400)
    await reporter.report(StatusEvent("job-5", "completed", model_url="u"))
    await reporter.drain(5)
    assert [d.answered for d in webhook_receiver.deliveries] == [400]
    assert (await reporter.latest("job-5"))["delivery"].startswith("rejected by the backend (HTTP 400")
    assert await redis_client.hlen(RedisKeys(receiver_settings.key_prefix).outbox()) == 0


async def test_backend_outage_delivers_only_the_latest_status_later(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter], webhook_receiver: WebhookReceiver,
) -> None:
    reporter = make_reporter(receiver_settings)
    webhook_receiver.stop()
    await reporter.begin("job-6")
    await reporter.report(StatusEvent("job-6", "processing", metadata={"stage": "inference", "progress": 30}))
    await reporter.report(StatusEvent("job-6", "completed", model_url="https://cdn/6.glb"))
    await reporter.drain(10)
    status = await reporter.latest("job-6")
    assert (status["status"], status["delivery"]) == ("completed", "pending")  # right in Redis all along

    webhook_receiver.start()
    deadline = time.monotonic() + 10
    while not webhook_receiver.accepted() and time.monotonic() < deadline:
        await reporter.redeliver_due()
        await asyncio.sleep(0.1)
    assert webhook_receiver.accepted() == [{"jobId": "job-6", "status": "completed", "modelUrl": "https://cdn/6.glb"}]
    await reporter.redeliver_due()
    assert len(webhook_receiver.deliveries) == 1  # delivered once, then gone from the outbox
    assert (await reporter.latest("job-6"))["delivery"] == "delivered"


async def test_a_late_progress_update_never_overwrites_completed(
    receiver_settings: Settings, make_reporter: Callable[[Settings], Reporter], webhook_receiver: WebhookReceiver,
) -> None:
    reporter = make_reporter(receiver_settings)
    await reporter.begin("job-7")
    await reporter.report(StatusEvent("job-7", "completed", model_url="https://cdn/7.glb"))
    await reporter.report(StatusEvent("job-7", "processing", metadata={"stage": "upload", "progress": 90}))
    await reporter.drain(5)
    assert (await reporter.latest("job-7"))["status"] == "completed"
    assert [body["status"] for body in webhook_receiver.accepted("job-7")] == ["completed"]


async def test_every_text_sent_to_the_backend_is_bounded(
    make_settings: Callable[..., Settings], make_reporter: Callable[[Settings], Reporter],
    webhook_receiver: WebhookReceiver,
) -> None:
    reporter = make_reporter(make_settings(backend_url=webhook_receiver.url, status_text_max_chars=300))
    long = "image https://cdn.example.com/" + "x" * 100_000 + ".jpg: HTTP 404"
    await reporter.report(StatusEvent("job-8", "failed", error_message=long,
                                      metadata={"stage": "download", "notes": [long], "nested": {"url": long}}))
    await reporter.drain(5)
    (body,) = webhook_receiver.accepted("job-8")
    assert len(body["errorMessage"]) == 300 and body["errorMessage"].endswith("characters in all]")
    assert body["errorMessage"].startswith("image https://cdn.example.com/xxx")
    assert len(body["metadata"]["notes"][0]) == len(body["metadata"]["nested"]["url"]) == 300
    assert len((await reporter.latest("job-8"))["error_message"]) == 300
