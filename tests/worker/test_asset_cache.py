"""No second run for the same photo, end to end: a worker on a real tritonserver (explicit model
control, as in production), redis-server and the Supabase Storage stand-in, with jobs one after the
other and jobs at the same time. Whether the mesh ensemble ran is read from Triton's own metrics
(``nv_inference_count``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from client_worker.config import Settings
from img2mesh.contract import ENCODER, ENSEMBLE
from local_triton import LocalTriton
from tests.support.supabase_server import SupabaseStorageFixture
from tests.support.triton import ANALYTIC_COLOR, GeneratedWeights, build_portable_repository
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import REPOSITORY_ROOT, final, guide_job, wait_until
from tests.worker.conftest import WorkerThread
from triposr.synthetic import write_checkpoint

FILES = (".glb", ".usdz", ".png")
_ENSEMBLE_COUNT = re.compile(rf'^nv_inference_count\{{model="{ENSEMBLE}",[^}}]*\}} (\S+)$', re.M)


def ensemble_runs(server: LocalTriton) -> int:
    """How many requests Triton's mesh ensemble has served (all versions), from its metrics port."""
    return int(sum(float(value) for value in _ENSEMBLE_COUNT.findall(httpx.get(server.metrics_url).text)))


def stem(job_id: str) -> str:
    return f"test-shop.myshopify.com/products/123/{job_id}"


def test_the_same_photo_is_meshed_once_until_a_roll_and_a_failed_copy_runs_the_model(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    start_triton: Callable[..., LocalTriton], analytic_repository: Path, test_weights: GeneratedWeights,
    photo_url: str, redis_url: str, webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
    tmp_path: Path,
) -> None:
    triton = start_triton(analytic_repository, model_control="explicit", load_models=("*",))
    settings = e2e_settings(triton_url=triton.grpc_url)
    worker = start_worker(settings)
    queue = redis.Redis.from_url(redis_url)
    objects = supabase_storage.objects

    def run_job() -> tuple[str, dict]:
        job_id = str(uuid.uuid4())
        queue.lpush("celery", json.dumps(guide_job(job_id, [photo_url])))
        completed = final(webhook_receiver, job_id, 120)
        assert completed["status"] == "completed", completed
        assert completed["modelUrl"] == supabase_storage.public_url(stem(job_id) + ".glb")
        return job_id, completed["metadata"]  # type: ignore[return-value]

    made, made_metadata = run_job()
    wait_until(lambda: ensemble_runs(triton) == 1, what="Triton to count the first job's run")
    assert made_metadata["cache"]["hit"] is False

    copied, metadata = run_job()
    assert ensemble_runs(triton) == 1
    assert metadata["cache"] == {"hit": True, "address": made_metadata["cache"]["address"], "source_job_id": made}
    for extension in FILES:
        assert objects[stem(copied) + extension].data == objects[stem(made) + extension].data
        assert objects[stem(copied) + extension].content_type == objects[stem(made) + extension].content_type
    assert httpx.get(metadata["usdz_url"]).content == objects[stem(made) + ".usdz"].data
    for key in ("face_count", "file_sizes_bytes", "weights_version", "dimensions_m", "mesh_info", "image_url"):
        assert metadata[key] == made_metadata[key], key
    assert "inference" not in metadata["timings_ms"] and "copy" in metadata["timings_ms"]

    worker.stop()
    start_worker(settings)
    _, metadata = run_job()
    assert metadata["cache"]["source_job_id"] == made and ensemble_runs(triton) == 1

    # The source's files are gone (the backend deleted the product): the copy fails, the model runs,
    # and the new files replace the entry.
    del objects[stem(made) + ".usdz"]
    replacing, metadata = run_job()
    assert metadata["cache"]["hit"] is False
    wait_until(lambda: ensemble_runs(triton) == 2, what="the fallback's model run")
    _, metadata = run_job()
    assert metadata["cache"]["source_job_id"] == replacing and ensemble_runs(triton) == 2

    # A model version roll (docs/runbook.md's commands) changes the address: the cache misses.
    checkpoint = write_checkpoint(tmp_path / "v2", size="tiny", kind="analytic", radius=0.35, color=ANALYTIC_COLOR)
    build_portable_repository(checkpoint, test_weights.u2net, triton.repository, version=2)
    rolled = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "export.rollout", "roll", "--triton-url", triton.grpc_url, "--version", "2",
         "--drain-quiet-s", "0.5"], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert rolled.returncode == 0, rolled.stderr
    _, metadata = run_job()
    assert metadata["cache"]["hit"] is False and metadata["weights_version"] == "2"
    assert metadata["cache"]["models"][ENCODER] == 2
    wait_until(lambda: ensemble_runs(triton) == 3, what="the run after the roll")


def test_jobs_of_the_same_photo_enqueued_together_run_the_model_once(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    triton_server: LocalTriton, photo_url: str, redis_url: str, webhook_receiver: WebhookReceiver,
    supabase_storage: SupabaseStorageFixture,
) -> None:
    start_worker(e2e_settings(concurrency=2))
    objects = supabase_storage.objects
    runs = ensemble_runs(triton_server)
    job_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    queue = redis.Redis.from_url(redis_url)
    queue.lpush("celery", *(json.dumps(guide_job(job_id, [photo_url])) for job_id in job_ids))
    caches = {}
    for job_id in job_ids:
        completed = final(webhook_receiver, job_id, 120)
        assert completed["status"] == "completed", completed
        caches[job_id] = completed["metadata"]["cache"]  # type: ignore[index]
    made, copied = sorted(job_ids, key=lambda job_id: caches[job_id]["hit"])
    assert caches[made]["hit"] is False
    assert caches[copied] == {"hit": True, "address": caches[made]["address"], "source_job_id": made}
    assert ensemble_runs(triton_server) == runs + 1
    for extension in FILES:
        assert objects[stem(copied) + extension].data == objects[stem(made) + extension].data
