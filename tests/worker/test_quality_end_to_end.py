"""The asset's check against its photo, end to end on real servers: redis-server, tritonserver with the
``silhouette`` weights (the photo's product extruded in its colours, behind the real u2netp), the
Supabase Storage stand-in, an image server and the webhook receiver.

A drawn boot's asset is ``ok``; a silver coin's, which the weights leave full of holes (they read its
grey as background), is ``review`` with reasons a merchant can read, after one more try at the next
preset. Both carry the ``quality`` object in the completed webhook, the Redis status and the Celery
result; the worker's histograms count them; a job's own ``quality_check_mode: strict`` fails the coin,
also when the coin's asset is in the asset cache (whose copies are judged by each job's own mode).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from celery import Celery

from bench.photos import drawn_photos
from bench.real_photos import real_photos
from client_worker.config import Settings
from client_worker.pipeline.presets import PRESETS
from local_triton import LocalTriton
from tests.support.image_server import ImageServer, Route
from tests.support.supabase_server import SupabaseStorageFixture
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job
from tests.worker.conftest import WorkerThread, by_name

TASK = "generate_3d_model"


@pytest.fixture
def worker(e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
           silhouette_triton_server: LocalTriton, backend_url: str) -> WorkerThread:
    # The balanced grid: jobs at fast can be made again at balanced.
    settings = e2e_settings(triton_url=silhouette_triton_server.grpc_url, result_backend_url=backend_url,
                            max_resolution=PRESETS["balanced"].resolution, asset_cache_ttl_s=0)
    return start_worker(settings)


def photo_urls(image_server: ImageServer) -> dict[str, str]:
    boot = next(photo for photo in drawn_photos() if photo.name == "boot")
    coin = next(photo for photo in real_photos() if photo.name == "one-coin")
    image_server.routes["/boot.jpg"] = Route(body=boot.encoded(), headers={"Content-Type": "image/jpeg"})
    image_server.routes["/coin.png"] = Route(body=coin.make(), headers={"Content-Type": "image/png"})
    return {"boot": by_name(image_server.url("/boot.jpg")), "coin": by_name(image_server.url("/coin.png"))}


def job(job_id: str, url: str, **metadata: object) -> dict[str, object]:
    return {"job_id": job_id, "shop": "test-shop.myshopify.com", "product_id": "gid://shopify/Product/123",
            "image_urls": [url], "metadata": {"quality": "fast", **metadata}}


def test_a_good_asset_is_ok_and_a_broken_one_is_for_review_with_readable_reasons(
    worker: WorkerThread, celery_producer: Celery, image_server: ImageServer, webhook_receiver: WebhookReceiver,
    redis_url: str,
) -> None:
    urls = photo_urls(image_server)
    producer = celery_producer
    good = producer.send_task(TASK, kwargs=job("quality-good", urls["boot"]))
    broken = producer.send_task(TASK, kwargs=job("quality-broken", urls["coin"]))
    refused = producer.send_task(TASK, kwargs=job("quality-strict", urls["coin"], quality_check_mode="strict"))

    result = good.get(timeout=240)
    ok = final(webhook_receiver, "quality-good", 240)
    assert ok["status"] == "completed"
    quality = ok["metadata"]["quality"]
    assert (quality["mode"], quality["verdict"], quality["problems"]) == ("review", "ok", [])
    assert quality["measures"]["silhouette_iou"] > 0.9 and "retry" not in quality
    assert ok["metadata"]["preset"] == "fast" and ok["metadata"]["timings_ms"]["quality"] > 0
    assert result["quality"] == quality  # the Celery result
    status = redis.Redis.from_url(redis_url).hget("img2mesh:status:quality-good", "metadata")
    assert json.loads(status)["quality"] == quality  # the Redis status

    review = final(webhook_receiver, "quality-broken", 240)
    assert review["status"] == "completed"
    quality = review["metadata"]["quality"]
    assert quality["verdict"] == "review"
    messages = [problem["message"] for problem in quality["problems"]]
    print("\nreasons:", messages)
    assert any(message.startswith("the model's outline covers ") and "of the product's in the photo" in message
               for message in messages)
    assert any("loose pieces float beside the model" in message and message.endswith("of its surface)")
               for message in messages)
    assert quality["retry"]["preset"] == "fast" and review["metadata"]["preset"] == "balanced"
    assert broken.get(timeout=60)["quality"] == quality

    failed = final(webhook_receiver, "quality-strict", 240)
    assert failed["status"] == "failed" and failed["metadata"]["kind"] == "permanent"
    assert failed["errorMessage"].startswith("the model failed its check against the photo")
    assert failed["metadata"]["quality"]["verdict"] == "refused"
    with pytest.raises(Exception, match="the model failed its check against the photo"):
        refused.get(timeout=60)

    sample = worker.worker.metrics.registry.get_sample_value  # type: ignore[union-attr]
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "ok"}) == 1
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "review"}) == 1
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "refused"}) == 1
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "retried"}) == 2
    assert sample("img2mesh_worker_quality_silhouette_iou_count") == 3


def test_copies_of_a_cached_asset_are_judged_by_the_jobs_own_mode(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    silhouette_triton_server: LocalTriton, image_server: ImageServer, webhook_receiver: WebhookReceiver,
    redis_url: str, supabase_storage: SupabaseStorageFixture,
) -> None:
    # One preset's grid: no job is made again at the next preset, so the second and third copy the first.
    start_worker(e2e_settings(triton_url=silhouette_triton_server.grpc_url, max_resolution=PRESETS["fast"].resolution))
    coin = photo_urls(image_server)["coin"]
    queue = redis.Redis.from_url(redis_url)
    queue.lpush("celery", json.dumps(guide_job("coin-made", [coin], metadata={"quality": "fast"})))
    made = final(webhook_receiver, "coin-made", 240)
    assert made["status"] == "completed" and made["metadata"]["quality"]["verdict"] == "review"
    assert made["metadata"]["cache"]["hit"] is False

    for job_id, mode in (("coin-strict", "strict"), ("coin-report", "report")):
        job = guide_job(job_id, [coin], metadata={"quality": "fast", "quality_check_mode": mode})
        queue.lpush("celery", json.dumps(job))
    refused = final(webhook_receiver, "coin-strict", 120)
    assert refused["status"] == "failed" and refused["metadata"]["quality"]["verdict"] == "refused"
    assert not [key for key in supabase_storage.objects if "coin-strict" in key], "refused files are not copied"
    reported = final(webhook_receiver, "coin-report", 120)
    assert reported["status"] == "completed" and reported["metadata"]["cache"]["hit"] is True
    assert set(reported["metadata"]["quality"]) == {"mode", "measures"}
    assert reported["metadata"]["quality"]["measures"] == made["metadata"]["quality"]["measures"]
