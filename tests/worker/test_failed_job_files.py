"""A job that ends failed leaves no files and no records of its own
(docs/runbook.md, "Files of failed jobs"): killed between two uploads at its last attempt, refused by storage after part of its
files were uploaded, killed while copying an earlier job's files from the asset cache. Real worker
processes, real Redis, the Supabase Storage stand-in."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import redis

from client_worker.config import Settings
from tests.support.supabase_server import SupabaseStorageFixture
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job, wait_until

STEM = "test-shop.myshopify.com/products/123/"
StartProcess = Callable[[Settings], subprocess.Popen[bytes]]


def files_of(storage: SupabaseStorageFixture, job_id: str) -> list[str]:
    return sorted(key for key in storage.objects if key.startswith(STEM + job_id + "."))


def records_of(r: redis.Redis, job_id: str) -> dict[str, object]:
    """What Redis keeps of the job's files: its artifact hash and its entry in the discarded files."""
    return {"artifact": r.hgetall(f"img2mesh:artifact:{job_id}"),
            "discarded": r.hget("img2mesh:discarded-files", job_id)}


def killed_while_storing(settings: Settings, worker_process: StartProcess, storage: SupabaseStorageFixture,
                         r: redis.Redis, job_id: str, photo_url: str) -> None:
    """The job's poster upload (or copy) arrives at storage, held there; the worker process is
    killed at that moment, with the GLB and the USDZ stored."""
    held = storage.server.hold(f"{job_id}.png")
    process = worker_process(settings)
    r.lpush("celery", json.dumps(guide_job(job_id, [photo_url])))
    assert held.arrived.wait(90), "the poster never reached storage"
    process.kill()
    process.wait(10)
    held.release.set()
    assert files_of(storage, job_id) == [f"{STEM}{job_id}.glb", f"{STEM}{job_id}.usdz"]
    assert records_of(r, job_id)["artifact"], "the killed attempt left its records"


def assert_failed_without_a_trace(receiver: WebhookReceiver, storage: SupabaseStorageFixture, r: redis.Redis,
                                  job_id: str) -> dict[str, object]:
    failed = final(receiver, job_id, 90)
    assert failed["status"] == "failed", failed
    (dead,) = [json.loads(record) for record in r.lrange("img2mesh:dead", 0, -1)]
    assert dead["job_id"] == job_id
    nothing = {"artifact": {}, "discarded": None}
    wait_until(lambda: not files_of(storage, job_id) and records_of(r, job_id) == nothing, 30,
               "the failed job's files and records to be removed")
    return failed


def test_a_job_killed_between_uploads_at_its_last_attempt_leaves_no_files(
    e2e_settings: Callable[..., Settings], worker_process: StartProcess, photo_url: str, redis_url: str,
    webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    settings = e2e_settings(max_attempts=1)
    r = redis.Redis.from_url(redis_url)
    killed_while_storing(settings, worker_process, supabase_storage, r, "killed-uploading", photo_url)

    worker_process(settings)  # recovers the message; its next attempt is over the limit
    failed = assert_failed_without_a_trace(webhook_receiver, supabase_storage, r, "killed-uploading")
    assert failed["errorMessage"].startswith("gave up after 1 attempt:"), failed
    assert failed["metadata"]["kind"] == "exhausted"


def test_a_job_refused_by_storage_after_part_of_its_upload_leaves_no_files(
    e2e_settings: Callable[..., Settings], worker_process: StartProcess, photo_url: str, redis_url: str,
    webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    bucket = supabase_storage.server.buckets[supabase_storage.bucket]
    bucket.allowed_mime_types = ["model/gltf-binary", "model/vnd.usdz+zip"]  # the poster's PNG is refused
    r = redis.Redis.from_url(redis_url)
    worker_process(e2e_settings())
    r.lpush("celery", json.dumps(guide_job("poster-refused", [photo_url])))
    failed = assert_failed_without_a_trace(webhook_receiver, supabase_storage, r, "poster-refused")
    assert (failed["metadata"]["kind"], failed["metadata"]["stage"]) == ("permanent", "upload")
    assert "image/png" in failed["errorMessage"]
    uploads = [request.path for request in supabase_storage.server.requests if request.method in ("POST", "PUT")]
    assert [path.rsplit(".", 1)[-1] for path in uploads] == ["glb", "usdz", "png"]  # two were stored, then removed


def test_copies_from_the_asset_cache_of_a_job_killed_while_copying_are_removed(
    e2e_settings: Callable[..., Settings], worker_process: StartProcess, photo_url: str, redis_url: str,
    webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    settings = e2e_settings(max_attempts=1)
    r = redis.Redis.from_url(redis_url)
    maker = worker_process(settings)
    r.lpush("celery", json.dumps(guide_job("the-maker", [photo_url])))
    assert final(webhook_receiver, "the-maker", 90)["status"] == "completed"
    made = {key: supabase_storage.objects[key].data for key in files_of(supabase_storage, "the-maker")}
    maker.kill()
    maker.wait(10)

    killed_while_storing(settings, worker_process, supabase_storage, r, "killed-copying", photo_url)
    copies = [request for request in supabase_storage.server.requests if request.path.endswith("/object/copy")]
    assert len(copies) == 3  # the GLB, the USDZ and the held poster: copies, not a model run

    worker_process(settings)
    assert_failed_without_a_trace(webhook_receiver, supabase_storage, r, "killed-copying")
    assert {key: supabase_storage.objects[key].data for key in files_of(supabase_storage, "the-maker")} == made
