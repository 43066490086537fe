"""Redis killed with SIGKILL (append-only file on, as in production) at each point of a job, and
again and again under a stream of jobs: every job reaches exactly one final state, in the backend's
webhooks and in Redis; none is lost, none completes twice, and an outage uses up no attempt.

The points are hooks around the worker's own steps, so each outage lands exactly where it is named;
the stream test kills Redis at random moments instead.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from client_worker import photo_choice
from client_worker.config import Settings
from client_worker.jobs.queue import JobQueue
from client_worker.consumer import Consumer
from client_worker.status.webhook import WebhookSender
from client_worker.storage import SupabaseStorage
from tests.support.image_server import ImageServer, Route
from tests.support.redis_server import RedisServer
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job, wait_until
from tests.worker.conftest import WorkerThread, assert_nothing_left, by_name, wait_for_ledger


class Outage:
    """Kills Redis once, from inside the worker, and starts it again after ``down_s`` from a thread."""

    def __init__(self, server: RedisServer, down_s: float) -> None:
        self.server = server
        self.down_s = down_s
        self.fired = threading.Event()
        self.over = threading.Event()

    def now(self) -> bool:
        """Kill Redis the first time it is called; True then."""
        if self.fired.is_set():
            return False
        self.fired.set()
        self.server.kill()
        threading.Thread(target=self._restart, daemon=True).start()
        return True

    def _restart(self) -> None:
        time.sleep(self.down_s)
        self.server.start()
        self.over.set()


@dataclass(frozen=True)
class Point:
    """Where in a job Redis dies: before or after a worker method, or after it with its reply lost."""

    name: str
    owner: Any
    method: str
    when: str  # "before", "after" or "reply-lost"

    def install(self, monkeypatch: pytest.MonkeyPatch, outage: Outage) -> None:
        original = getattr(self.owner, self.method)
        when = self.when

        async def bound(*args: Any, **kwargs: Any) -> Any:
            if when == "before":
                outage.now()
            result = await original(*args, **kwargs)
            if when == "after":
                outage.now()
            if when == "reply-lost" and outage.now():
                raise RedisConnectionError("Redis was killed before its reply arrived")
            return result

        monkeypatch.setattr(self.owner, self.method, bound)


POINTS = [
    Point("claimed, before parsing", Consumer, "consume", "before"),
    Point("admitted, reply lost", JobQueue, "admit", "reply-lost"),
    Point("downloading", photo_choice, "download_each", "before"),
    Point("uploaded, before recording it", SupabaseStorage, "upload", "after"),
    Point("completing", JobQueue, "complete", "before"),
    Point("completed, reply lost", JobQueue, "complete", "reply-lost"),
    Point("reporting the webhook", WebhookSender, "_mark", "before"),
]


@pytest.mark.parametrize("point", POINTS, ids=[point.name for point in POINTS])
def test_redis_killed_at_a_point_of_a_job(
    point: Point, persistent_redis: RedisServer, e2e_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerThread], photo_url: str, webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outage = Outage(persistent_redis, down_s=1.5)
    point.install(monkeypatch, outage)
    start_worker(e2e_settings(redis_url=persistent_redis.url, concurrency=1))
    r = persistent_redis.client()
    r.lpush("celery", json.dumps(guide_job("the-job", [photo_url])))

    ledger = wait_for_ledger(["the-job"], webhook_receiver, r, timeout_s=60)
    assert outage.fired.is_set() and outage.over.wait(10), f"the outage at {point.name!r} never happened"
    summary = ledger.summary()
    assert summary["completed"] == 1, (summary, ledger.finals)
    assert summary["duplicate_completions"] == summary["redis_disagrees"] == 0, summary
    (completed,) = ledger.finals["the-job"]
    assert completed["metadata"]["attempts"] == 1  # the outage used up no attempt
    assert_nothing_left(r)


def test_redis_killed_again_and_again_under_a_stream_of_jobs(
    persistent_redis: RedisServer, e2e_settings: Callable[..., Settings], start_worker: Callable[..., WorkerThread],
    product_photo: bytes, image_server: ImageServer, webhook_receiver: WebhookReceiver,
) -> None:
    """Two workers, 24 jobs arriving over 6 s (4 of them with a missing image), Redis killed three
    times for 1–2.5 s at random moments."""
    image_server.routes["/photo.jpg"] = Route(body=product_photo, delay_s=0.3)
    settings = e2e_settings(redis_url=persistent_redis.url, concurrency=2)
    for _ in range(2):
        start_worker(settings)
    rng = random.Random(8)
    jobs = [f"stream-{index}" for index in range(24)]
    missing = set(jobs[5::6])
    outages: list[Outage] = []

    def kill_three_times() -> None:
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 3.0))
            outages.append(Outage(persistent_redis, down_s=rng.uniform(1.0, 2.5)))
            outages[-1].now()
            outages[-1].over.wait(10)

    killer = threading.Thread(target=kill_three_times, daemon=True)
    killer.start()
    for job_id in jobs:
        path = "/missing.jpg" if job_id in missing else "/photo.jpg"
        push(persistent_redis, json.dumps(guide_job(job_id, [by_name(image_server.url(path))])))
        time.sleep(0.25)
    killer.join(30)

    ledger = wait_for_ledger(jobs, webhook_receiver, persistent_redis.client(), timeout_s=180)
    summary = {**ledger.summary(), "redis_kills": len(outages)}
    print("redis kill -9 under a stream of jobs:", json.dumps(summary))
    assert len(outages) == 3
    assert summary["lost"] == summary["duplicate_completions"] == summary["more_than_one_final_state"] == 0, summary
    assert summary["redis_disagrees"] == 0, summary
    assert (summary["completed"], summary["failed"]) == (len(jobs) - len(missing), len(missing)), ledger.finals
    assert_nothing_left(persistent_redis.client())


def push(server: RedisServer, message: str) -> None:
    """LPUSH as a producer would, trying again while Redis is down. A push whose reply was lost may
    have happened all the same: the worker then sees a duplicate delivery, which it must absorb."""
    while True:
        client = server.client()
        try:
            client.lpush("celery", message)
            return
        except redis.ConnectionError:
            time.sleep(0.2)
        finally:
            client.close()


def test_an_outage_is_logged_as_warnings_with_a_count_and_no_stack_trace(
    persistent_redis: RedisServer, e2e_settings: Callable[..., Settings],
    worker_process: Callable[[Settings], subprocess.Popen[bytes]], photo_url: str,
    webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    """Redis is killed while webhooks are in flight (the receiver takes 2 s to answer each), so the
    worker process meets the outage in its background deliveries as well as in its job and loops."""
    webhook_receiver.delay_s = 2.0
    process = worker_process(e2e_settings(redis_url=persistent_redis.url, concurrency=1))
    r = persistent_redis.client()
    wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
    r.lpush("celery", json.dumps(guide_job("through-an-outage", [photo_url])))
    wait_until(lambda: webhook_receiver.in_flight, 60, "a webhook in flight")
    persistent_redis.kill()
    time.sleep(5)  # the deliveries in flight end and find Redis gone; so do the loops and the job
    persistent_redis.start()
    assert final(webhook_receiver, "through-an-outage", 120)["status"] == "completed"
    process.terminate()
    assert process.wait(60) == 0

    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["level"] == "ERROR" or "exc" in line], "an outage logged an error"
    outage = [line for line in lines if line["level"] == "WARNING" and "Redis" in line["msg"]]
    assert {"webhook delivery: Redis unreachable; the outbox will retry"} <= {line["msg"] for line in outage}, outage
    counted = [line for line in outage if "failures" in line or "tries" in line]
    assert counted and all(isinstance(line.get("failures", line.get("tries")), int) for line in counted)
    uncounted = {line["msg"] for line in outage} - {line["msg"] for line in counted}
    assert uncounted <= {"Redis failed during the job; it is handed back, uncounted", "Redis restarted; checking this "
                         "worker's processing list"}, uncounted
