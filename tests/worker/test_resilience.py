"""Failures of the moving parts: a worker killed mid-job, Triton stopped mid-run, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from client_worker.config import Settings
from local_triton import LocalTriton
from tests.support.image_server import ImageServer, Route
from tests.support.supabase_server import SupabaseStorageFixture
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job, settings_environment, start_worker_process, statuses, wait_until
from tests.worker.conftest import WorkerThread, by_name

def test_worker_killed_mid_job_another_completes_it_exactly_once(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], product_photo: bytes,
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
    supabase_storage: SupabaseStorageFixture, tmp_path: Path,
) -> None:
    image_server.routes["/slow.jpg"] = Route(body=product_photo, delay_s=3)
    settings = e2e_settings()
    doomed = start_worker_process(settings, tmp_path)
    r = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: r.smembers("img2mesh:workers"), 30, "the worker process to register")
        job_id = str(uuid.uuid4())
        r.lpush("celery", json.dumps(guide_job(job_id, [by_name(image_server.url("/slow.jpg"))])))
        wait_until(lambda: b'"download"' in (r.hget(f"img2mesh:status:{job_id}", "metadata") or b""), 30,
                   "the job to be mid-download")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert r.llen("celery") == 0  # the job is in the dead worker's processing list, not lost

    start_worker(settings)
    completed = final(webhook_receiver, job_id, 60)
    assert completed["status"] == "completed", completed
    assert completed["metadata"]["attempts"] == 2
    assert statuses(webhook_receiver, job_id).count("completed") == 1
    stem = f"test-shop.myshopify.com/products/123/{job_id}"
    assert list(supabase_storage.objects) == [f"{stem}.glb", f"{stem}.usdz", f"{stem}.png"]


def test_triton_stopped_mid_run_jobs_wait_and_none_fails(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    start_triton: Callable[..., LocalTriton], analytic_repository: Path, product_photo: bytes,
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    triton = start_triton(analytic_repository, copy=False, exit_timeout_s=1)
    image_server.routes["/photo.jpg"] = Route(body=product_photo, delay_s=0.5)
    start_worker(e2e_settings(triton_url=triton.grpc_url, max_attempts=2))
    r = redis.Redis.from_url(redis_url)
    job_ids = [f"triton-outage-{index}" for index in range(6)]
    for job_id in job_ids:
        r.lpush("celery", json.dumps(guide_job(job_id, [by_name(image_server.url("/photo.jpg"))])))
    final(webhook_receiver, job_ids[0], 60)

    triton.stop()
    wait_until(lambda: any(b"retry_scheduled" in (r.hget(f"img2mesh:status:{j}", "metadata") or b"")
                           for j in job_ids), 30, "a job to meet the outage")
    triton.start()

    bodies = [final(webhook_receiver, job_id, 120) for job_id in job_ids]
    assert [body["status"] for body in bodies] == ["completed"] * len(job_ids)
    assert r.llen("img2mesh:dead") == 0


def test_sigterm_hands_running_jobs_back(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], product_photo: bytes,
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    image_server.routes["/slow.jpg"] = Route(body=product_photo, delay_s=3)
    settings = e2e_settings(shutdown_grace_s=0.5)
    process = start_worker_process(settings, tmp_path)
    r = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: r.smembers("img2mesh:workers"), 30, "the worker process to register")
        r.lpush("celery", json.dumps(guide_job("interrupted", [by_name(image_server.url("/slow.jpg"))])))
        wait_until(lambda: r.exists("img2mesh:lease:interrupted"), 30, "the job to start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert r.lrange("celery", 0, -1) != []  # handed back, not lost
    assert r.smembers("img2mesh:workers") == set()  # left cleanly: nothing for others to recover
    assert r.hget("img2mesh:job:interrupted", "attempts") == b"0"  # the interrupted run is not counted

    start_worker(settings)
    assert final(webhook_receiver, "interrupted", 60)["status"] == "completed"


# A worker process that dies (SIGKILL, by its own hand) at one exact step of its first job.
CRASHING_WORKER = """
import os, signal, sys
from client_worker import consumer, photo_choice

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "after-upload":  # the files are uploaded and recorded; the completion is not
    consumer.Consumer._complete = die
else:
    photo_choice.download_each = die
from client_worker.__main__ import main
sys.exit(main(["run"]))
"""


def crash_once(settings: Settings, cwd: Path, where: str, job: dict[str, object] | None = None) -> None:
    """Run a worker process that dies at ``where`` in the first job it takes (``job``, when given,
    is queued for it; otherwise it takes over the message of the worker that died before it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER, where], env=settings_environment(settings), cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=open(cwd / "worker.log", "ab"),  # noqa: SIM115
    )
    try:
        if job is not None:
            redis.Redis.from_url(settings.redis_url).lpush("celery", json.dumps(job))
        assert process.wait(60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()


def test_a_job_killed_after_its_upload_completes_even_at_the_attempt_limit(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture, tmp_path: Path,
) -> None:
    settings = e2e_settings(max_attempts=1)
    crash_once(settings, tmp_path, "after-upload", guide_job("uploaded-then-killed", [photo_url]))
    stem = "test-shop.myshopify.com/products/123/uploaded-then-killed"
    assert sorted(supabase_storage.objects) == [f"{stem}.glb", f"{stem}.png", f"{stem}.usdz"]

    start_worker(settings)  # recovers the dead worker's message once its heartbeat expired
    completed = final(webhook_receiver, "uploaded-then-killed", 60)
    assert completed["status"] == "completed", completed
    assert completed["metadata"]["attempts"] == 1
    uploads = [request for request in supabase_storage.server.requests if request.method in ("POST", "PUT")]
    assert len(uploads) == 3  # the files of the first attempt, not uploaded again


def test_attempts_cut_short_by_crashes_are_counted_exactly(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    settings = e2e_settings(max_attempts=2)
    crash_once(settings, tmp_path, "download", guide_job("crashes-twice", [photo_url]))
    crash_once(settings, tmp_path, "download")  # attempt 2, on the recovered message
    start_worker(settings)
    failed = final(webhook_receiver, "crashes-twice", 60)
    assert failed["status"] == "failed"
    assert failed["errorMessage"].startswith("gave up after 2 attempts:"), failed["errorMessage"]
    assert failed["metadata"] == {"attempts": 2, "stage": "intake", "kind": "exhausted"}
