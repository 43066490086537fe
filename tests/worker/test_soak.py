"""A bounded soak: three worker processes under a stream of jobs, one of them SIGKILLed every few
seconds and replaced. Every job reaches exactly one final state; none is lost, none completes twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from client_worker.config import Settings
from tests.support.image_server import ImageServer, Route
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import guide_job, start_worker_process, wait_until
from tests.worker.conftest import assert_nothing_left, by_name, wait_for_ledger

JOBS = 30
KILLS = 6


def test_sigkill_soak_of_worker_processes(
    e2e_settings: Callable[..., Settings], product_photo: bytes, image_server: ImageServer, redis_url: str,
    webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    image_server.routes["/photo.jpg"] = Route(body=product_photo, delay_s=0.4)
    settings = e2e_settings(concurrency=2, max_attempts=10)
    rng = random.Random(11)
    r = redis.Redis.from_url(redis_url)
    workers = [start_worker_process(settings, tmp_path) for _ in range(3)]
    kills = 0
    try:
        wait_until(lambda: len(r.smembers("img2mesh:workers")) == 3, 60, "three worker processes to register")
        jobs = [f"soak-{index}" for index in range(JOBS)]
        missing = set(jobs[4::10])
        next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
        for job_id in jobs:
            path = "/missing.jpg" if job_id in missing else "/photo.jpg"
            r.lpush("celery", json.dumps(guide_job(job_id, [by_name(image_server.url(path))])))
            time.sleep(0.3)
            if time.monotonic() >= next_kill and kills < KILLS:
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait(10)
                workers[victim] = start_worker_process(settings, tmp_path)
                kills += 1
                next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
        while kills < KILLS:  # the rest of the kills while the last jobs run
            time.sleep(rng.uniform(1.0, 2.0))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            workers[victim] = start_worker_process(settings, tmp_path)
            kills += 1

        ledger = wait_for_ledger(jobs, webhook_receiver, r, timeout_s=240)
    finally:
        stop_all(workers)
    summary = {**ledger.summary(), "worker_kills": kills}
    print("SIGKILL soak:", json.dumps(summary))
    assert summary["lost"] == summary["duplicate_completions"] == summary["more_than_one_final_state"] == 0, summary
    assert summary["redis_disagrees"] == 0, summary
    assert (summary["completed"], summary["failed"]) == (JOBS - len(missing), len(missing)), ledger.finals
    attempts = [event["metadata"]["attempts"] for events in ledger.finals.values() for event in events]
    assert max(attempts) <= settings.max_attempts
    wait_until(lambda: not r.llen("celery") and not r.zcard("img2mesh:delayed"), 30, "the queues to drain")
    assert_nothing_left(r)


def stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a clean hand-back), then wait; a worker that does not stop is killed."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
