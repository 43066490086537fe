"""End to end on real servers: redis-server, tritonserver (tiny generated weights), the Supabase
Storage stand-in driven by supabase-py, a local image server and a webhook receiver."""

from __future__ import annotations

import base64
import json
import os
import uuid
import zlib
from collections.abc import Callable

import httpx
import redis
from celery import Celery

from client_worker.config import Settings
from img2mesh.contract import ENSEMBLE
from local_triton import free_port
from tests.support.gltf_validator import GltfValidator
from tests.support.image_server import ImageServer, Route, png_declaring
from tests.support.supabase_server import SupabaseStorageFixture
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job, statuses, wait_until
from tests.worker.conftest import WorkerThread, by_name


def test_guide_snippet_ends_with_a_glb_in_storage(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
    gltf_validator: GltfValidator,
) -> None:
    metrics_port = free_port()
    worker = start_worker(e2e_settings(metrics_port=metrics_port))
    r = redis.Redis.from_url(redis_url)
    job_id = str(uuid.uuid4())
    test_job = guide_job(job_id, [photo_url])
    r.lpush("celery", json.dumps(test_job))  # the guide's exact call

    completed = final(webhook_receiver, job_id)
    assert completed["status"] == "completed", completed
    seen = statuses(webhook_receiver, job_id)
    assert seen[0] == "processing" and seen.count("completed") == 1
    response = httpx.get(completed["modelUrl"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "model/gltf-binary"
    report = gltf_validator.assert_valid(response.content)
    stem = f"test-shop.myshopify.com/products/123/{job_id}"
    assert list(supabase_storage.objects) == [f"{stem}.glb", f"{stem}.usdz", f"{stem}.png"]

    metadata = completed["metadata"]
    usdz, poster = httpx.get(metadata["usdz_url"]), httpx.get(metadata["poster_url"])
    assert usdz.headers["content-type"] == "model/vnd.usdz+zip" and usdz.content[:2] == b"PK"
    assert poster.headers["content-type"] == "image/png" and poster.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata["file_sizes_bytes"] == {"model": len(response.content), "usdz": len(usdz.content),
                                            "poster": len(poster.content)}
    assert metadata["size"] == {"dimension": "largest_side", "metres": 0.3, "source": "default"}
    assert metadata["preset"] == "balanced" and metadata["resolution"] == 32
    assert metadata["model_name"] == ENSEMBLE and metadata["weights_version"] == "1"
    assert metadata["face_count"] == report["info"]["totalTriangleCount"] > 0
    assert metadata["file_size_bytes"] == len(response.content)
    assert metadata["attempts"] == 1
    assert set(metadata["timings_ms"]) >= {"download", "inference", "encoding", "upload", "total"}
    assert r.hget(f"img2mesh:status:{job_id}", "status") == b"completed"

    # The same message delivered again: skipped, no more objects, no second `completed`.
    r.lpush("celery", json.dumps(test_job))
    registry = worker.worker.metrics.registry
    wait_until(lambda: registry.get_sample_value("img2mesh_worker_jobs_total", {"outcome": "duplicate"}),
               what="the duplicate to be skipped")
    assert statuses(webhook_receiver, job_id).count("completed") == 1
    assert len(supabase_storage.objects) == 3

    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert 'img2mesh_worker_jobs_total{outcome="completed"} 1.0' in scraped
    assert 'img2mesh_worker_stage_seconds_count{stage="inference"} 1.0' in scraped


def test_celery_send_task_is_processed(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    start_worker(e2e_settings())
    backend = Celery("backend", broker=redis_url)
    job_id = str(uuid.uuid4())
    backend.send_task("generate_3d_model", kwargs={
        "job_id": job_id, "shop": "test-shop.myshopify.com", "product_id": "gid://shopify/Product/77",
        "variant_id": "gid://shopify/ProductVariant/5", "image_urls": [photo_url],
        "metadata": {"productTitle": "Coffee Mug", "quality": "fast", "size": {"height_cm": 12}},
    })
    completed = final(webhook_receiver, job_id)
    assert completed["status"] == "completed", completed
    metadata = completed["metadata"]
    assert metadata["preset"] == "fast"
    assert metadata["size"] == {"dimension": "height", "metres": 0.12, "source": "job"}
    assert metadata["dimensions_m"]["height"] == 0.12
    stem = f"test-shop.myshopify.com/products/77/variants/5/{job_id}"
    assert list(supabase_storage.objects) == [f"{stem}.glb", f"{stem}.usdz", f"{stem}.png"]
    assert httpx.get(completed["modelUrl"]).status_code == 200


def test_hostile_inputs_fail_with_actionable_messages_and_the_worker_keeps_serving(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    product_photo: bytes, image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    max_bytes = 200_000
    start_worker(e2e_settings(download_max_bytes=max_bytes, concurrency=4))
    routes = image_server.routes
    routes["/notimage.jpg"] = Route(body=b"<html>Sorry, this page moved</html>", headers={"Content-Type": "image/jpeg"})
    routes["/truncated.jpg"] = Route(body=product_photo[: len(product_photo) // 2])
    routes["/bomb.png"] = Route(body=png_declaring(30_000, 30_000))
    routes["/huge.jpg"] = Route(body=b"\xff\xd8\xff\xe0" + os.urandom(max_bytes + 1000))
    loopback_photo = image_server.url("/photo.jpg")  # the same photo, but by loopback address
    routes["/redirect.jpg"] = Route(status=302, headers={"Location": loopback_photo})

    expected = {
        "http-404": ([by_name(image_server.url("/missing.jpg"))], "HTTP 404"),
        "not-an-image": ([by_name(image_server.url("/notimage.jpg"))], "not an image"),
        "truncated": ([by_name(image_server.url("/truncated.jpg"))], "truncated"),
        "bomb": ([by_name(image_server.url("/bomb.png"))], "too many pixels"),
        "too-large": ([by_name(image_server.url("/huge.jpg"))], str(max_bytes)),
        "loopback": ([loopback_photo], "127.0.0.1"),
        "metadata-service": (["http://169.254.169.254/latest/meta-data/"], "169.254.169.254"),
        "private": (["http://10.1.2.3/photo.jpg"], "10.1.2.3"),
        "redirect-to-loopback": ([by_name(image_server.url("/redirect.jpg"))], "127.0.0.1"),
        "empty-urls": ([], "'image_urls' is empty"),
        "urls-not-a-list": (photo_url, "'image_urls' must be a list of URL strings"),
    }
    r = redis.Redis.from_url(redis_url)
    for job_id, (urls, _) in expected.items():
        r.lpush("celery", json.dumps(guide_job(job_id, urls)))
    r.lpush("celery", json.dumps(guide_job("unknown-preset", [photo_url], quality="ultra")))
    r.lpush("celery", json.dumps(guide_job("bad-size", [photo_url], metadata={"size": {"height_cm": "twelve"}})))
    r.lpush("celery", json.dumps(guide_job("bad-product-id", [photo_url], product_id="my-mug")))
    no_id = guide_job("x", [photo_url])
    del no_id["kwargs"]["job_id"]  # type: ignore[attr-defined]
    r.lpush("celery", json.dumps(no_id))
    r.lpush("celery", json.dumps(guide_job("good-after-all-that", [photo_url])))

    assert final(webhook_receiver, "good-after-all-that", 90)["status"] == "completed"
    for job_id, (_, fragment) in expected.items():
        body = final(webhook_receiver, job_id)
        assert body["status"] == "failed", (job_id, body)
        assert fragment in body["errorMessage"], (job_id, body["errorMessage"])
        assert body["metadata"]["kind"] == "permanent" and body["metadata"]["attempts"] == 1
    unknown = final(webhook_receiver, "unknown-preset")
    assert "unknown quality preset 'ultra'" in unknown["errorMessage"]
    bad_size = final(webhook_receiver, "bad-size")
    assert bad_size["errorMessage"] == "metadata.size.height_cm must be a number of cm, got 'twelve'"
    assert bad_size["metadata"] == {"attempts": 1, "stage": "intake", "kind": "permanent"}
    bad_id = final(webhook_receiver, "bad-product-id")
    assert "'product_id' must be a Shopify GID" in bad_id["errorMessage"] and bad_id["metadata"]["stage"] == "intake"
    (rejected,) = [json.loads(item) for item in r.lrange("img2mesh:rejected", 0, -1)]
    assert "'job_id' is required" in rejected["reason"]
    assert r.llen("img2mesh:dead") == len(expected) + 3


def test_backend_outage_delays_webhooks_but_redis_status_is_right_all_along(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    start_worker(e2e_settings())
    webhook_receiver.stop()
    r = redis.Redis.from_url(redis_url)
    r.lpush("celery", json.dumps(guide_job("during-outage", [photo_url])))
    seen: list[bytes] = []

    def completed_in_redis() -> bool:
        seen.append(r.hget("img2mesh:status:during-outage", "status") or b"")
        return seen[-1] == b"completed"

    wait_until(completed_in_redis, 60, "the Redis status to say completed")
    assert set(seen) <= {b"", b"processing", b"completed"}
    assert r.hget("img2mesh:status:during-outage", "delivery") == b"pending"
    assert webhook_receiver.deliveries == []

    webhook_receiver.start()
    completed = final(webhook_receiver, "during-outage")
    assert completed["status"] == "completed" and completed["modelUrl"]
    assert statuses(webhook_receiver, "during-outage") == ["completed"]  # only the latest is re-sent
    wait_until(lambda: r.hget("img2mesh:status:during-outage", "delivery") == b"delivered")


STORAGE_UNAVAILABLE = {"statusCode": "503", "code": "SlowDown", "error": "acquiring_lock_timeout",
                       "message": "acquiring lock timeout"}


def test_a_retry_after_a_storage_outage_reuses_the_files_and_uploads_only_what_is_missing(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    """Storage is down for the USDZ (the 2nd file) twice and then for the poster (the 3rd) once:
    the model is made once and the GLB uploaded once."""
    server = supabase_storage.server
    server.fail_next(503, STORAGE_UNAVAILABLE, times=2, keys_ending=".usdz")
    server.fail_next(503, STORAGE_UNAVAILABLE, times=1, keys_ending=".png")
    worker = start_worker(e2e_settings(max_attempts=4))
    redis.Redis.from_url(redis_url).lpush("celery", json.dumps(guide_job("partial-outage", [photo_url])))

    completed = final(webhook_receiver, "partial-outage")
    assert completed["status"] == "completed", completed
    assert completed["metadata"]["attempts"] == 4
    registry = worker.worker.metrics.registry
    assert registry.get_sample_value("img2mesh_worker_stage_seconds_count", {"stage": "inference"}) == 1
    uploaded = [request.path.rsplit(".", 1)[-1] for request in server.requests]
    assert uploaded == ["glb", "usdz", "png"], "each file stored once; failed attempts store nothing"
    stem = "test-shop.myshopify.com/products/123/partial-outage"
    assert completed["modelUrl"] == supabase_storage.public_url(f"{stem}.glb")
    assert completed["metadata"]["usdz_url"] == supabase_storage.public_url(f"{stem}.usdz")
    assert completed["metadata"]["poster_url"] == supabase_storage.public_url(f"{stem}.png")
    assert registry.get_sample_value("img2mesh_worker_stage_seconds_count", {"stage": "upload"}) == 4
    assert registry.get_sample_value("img2mesh_worker_retries_total", {"stage": "upload"}) == 3
    assert not redis.Redis.from_url(redis_url).exists("img2mesh:artifact:partial-outage")  # cleaned up


def test_transient_failures_until_the_last_attempt_dead_letter_the_job(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, supabase_storage: SupabaseStorageFixture,
) -> None:
    supabase_storage.server.fail_next(503, STORAGE_UNAVAILABLE, times=100)
    start_worker(e2e_settings(max_attempts=2))
    r = redis.Redis.from_url(redis_url)
    r.lpush("celery", json.dumps(guide_job("storage-down", [photo_url])))

    failed = final(webhook_receiver, "storage-down")
    assert failed["status"] == "failed"
    assert failed["errorMessage"].startswith("gave up after 2 attempts; last error: Supabase bucket '3d-models'")
    assert failed["metadata"] == {"attempts": 2, "stage": "upload", "kind": "exhausted"}
    (dead,) = [json.loads(item) for item in r.lrange("img2mesh:dead", 0, -1)]
    assert dead["job_id"] == "storage-down" and dead["reason"] == failed["errorMessage"]


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def poison_messages() -> dict[str, str | bytes]:
    """Messages no parser should loop on: each must be moved aside the first time it is seen."""
    return {
        "5,000-digit number": '{"n": ' + "9" * 5000 + "}",
        "100,000 levels deep": _deep(100_000),
        "deep job payload": json.dumps({"task": "generate_3d_model", "id": "d", "kwargs": {"job_id": "deep-1"}})[:-2]
        + ', "x": ' + _deep(70) + "}}",
        "over MESSAGE_MAX_BYTES": json.dumps(
            {"task": "generate_3d_model", "kwargs": {"job_id": "big", "pad": "x" * 1_100_000}}
        ),
        "compression bomb": json.dumps({
            "body": base64.b64encode(zlib.compress(b"[" + b" " * 20_000_000)).decode(),
            "content-type": "application/json", "properties": {"body_encoding": "base64"},
            "headers": {"task": "generate_3d_model", "id": "bomb", "compression": "application/x-gzip"}}),
        "not UTF-8": b"\xff\xfe\x00garbage",
        "JSON null": "null",
        "task name is a number": json.dumps({"task": 7, "id": "n", "kwargs": {}}),
        "body is a number": json.dumps({"body": 12, "headers": {"task": "generate_3d_model"}, "properties": {}}),
    }


def test_poison_messages_are_moved_aside_once_and_the_job_behind_them_runs(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    worker = start_worker(e2e_settings(concurrency=1))
    r = redis.Redis.from_url(redis_url)
    poison = poison_messages()
    for message in poison.values():
        r.lpush("celery", message)
    r.lpush("celery", json.dumps(guide_job("behind-the-poison", [photo_url])))

    assert final(webhook_receiver, "behind-the-poison", 60)["status"] == "completed"
    records = [json.loads(item) for item in r.lrange("img2mesh:rejected", 0, -1)]
    assert len(records) == len(poison), [record["reason"] for record in records]  # each one exactly once
    reasons = " | ".join(record["reason"] for record in reversed(records))
    for fragment in ("not a job", "nests deeper than MESSAGE_MAX_DEPTH", "more than MESSAGE_MAX_BYTES",
                     "expands to more than MESSAGE_MAX_DECOMPRESSED_BYTES", "not UTF-8", "expected an object",
                     "task '7' is not handled", "Celery body is JSON int"):
        assert fragment in reasons, (fragment, reasons)
    registry = worker.worker.metrics.registry
    assert registry.get_sample_value("img2mesh_worker_rejected_messages_total") == len(poison)
    assert r.llen("celery") == 0 and r.zcard("img2mesh:delayed") == 0


def test_bad_job_inputs_fail_permanently_with_messages_a_merchant_can_read(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], image_server: ImageServer,
    redis_url: str, webhook_receiver: WebhookReceiver, photo_url: str,
) -> None:
    start_worker(e2e_settings(concurrency=4))
    image_server.routes["/scan.tif"] = Route(body=b"II*\x00" + bytes(500), headers={"Content-Type": "image/tiff"})
    image_server.routes["/empty.jpg"] = Route(body=b"")
    missing = [by_name(image_server.url(f"/missing-{index}.jpg")) for index in range(1000)]
    expected = {
        "port-99999": (["http://localhost:99999/a.jpg"], "port 99999 is not a valid port number"),
        "tiff": ([by_name(image_server.url("/scan.tif"))], "TIFF images are not supported: save the photo as JPEG"),
        "empty-file": ([by_name(image_server.url("/empty.jpg"))], "the file is empty (0 bytes)"),
        "thousand-urls": (missing, "'image_urls' lists 1000 URLs, more than the 10 a job may have (IMAGE_URLS_MAX)"),
    }
    r = redis.Redis.from_url(redis_url)
    for job_id, (urls, _) in expected.items():
        r.lpush("celery", json.dumps(guide_job(job_id, urls)))
    r.lpush("celery", json.dumps(guide_job("huge-product-id", [photo_url], product_id="7" * 5000)))
    r.lpush("celery", json.dumps(guide_job("huge-shop", [photo_url], shop="s" * 5000)))
    r.lpush("celery", json.dumps(guide_job("placeholder", [photo_url])).replace('"placeholder"', "7" * 5000))
    for job_id, (_, fragment) in expected.items():
        failed = final(webhook_receiver, job_id)
        assert failed["status"] == "failed" and failed["metadata"]["kind"] == "permanent", (job_id, failed)
        assert fragment in failed["errorMessage"], (job_id, failed["errorMessage"])
        assert len(failed["errorMessage"]) <= 2000
        assert not any(word in failed["errorMessage"] for word in ("Error", "Traceback", "Exception")), failed
    huge = final(webhook_receiver, "huge-product-id")
    assert huge["status"] == "failed" and huge["metadata"] == {"attempts": 1, "stage": "intake", "kind": "permanent"}
    assert huge["errorMessage"] == "malformed job: 'product_id' is a number of 5000 digits; Shopify ids have at most 20"
    shop = final(webhook_receiver, "huge-shop")
    assert shop["status"] == "failed" and "'shop' must be the shop's host name" in shop["errorMessage"]
    assert "at most 253 characters" in shop["errorMessage"] and len(shop["errorMessage"]) < 400
    # A job id no key, path or webhook can carry: no job to report to, so the message is moved aside.
    wait_until(lambda: r.llen("img2mesh:rejected"), 30, "the 5000-digit job id to be rejected")
    (rejected,) = [json.loads(item) for item in r.lrange("img2mesh:rejected", 0, -1)]
    assert "'job_id' must be 1 to 128 characters" in rejected["reason"] and len(rejected["reason"]) < 500
    assert not any(len(delivery.json["jobId"]) > 128 for delivery in webhook_receiver.deliveries)


def test_an_attempt_that_outlives_the_job_deadline_fails_transiently(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], product_photo: bytes,
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    image_server.routes["/slow.jpg"] = Route(body=product_photo, delay_s=4)
    start_worker(e2e_settings(job_timeout_s=1.5, max_attempts=1))
    slow = guide_job("too-slow", [by_name(image_server.url("/slow.jpg"))])
    redis.Redis.from_url(redis_url).lpush("celery", json.dumps(slow))
    failed = final(webhook_receiver, "too-slow", 30)
    assert failed["status"] == "failed"
    assert failed["metadata"] == {"attempts": 1, "stage": "download", "kind": "exhausted"}
    assert failed["errorMessage"] == (
        "gave up after 1 attempt; last error: the job did not finish within 1.5 s (JOB_TIMEOUT_S) and stopped at the "
        "download stage"
    )
