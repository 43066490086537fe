"""The worker chooses the photo it meshes (docs/photo-check.md): real worker, tritonserver, Supabase
Storage stand-in, image server and webhook receiver, with the drawn photos of the photo check."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from client_worker.config import Settings
from client_worker.download import DownloadLimits
from client_worker.photo_choice import PhotoChoice
from client_worker.pipeline.inference import TritonMeshClient, TritonUnavailable
from img2mesh.contract import PHOTO_CHECK
from img2mesh.photo_measures import NO_OBJECT
from local_triton import LocalTriton
from tests.support import photo_check_photos as photos
from tests.support.image_server import ImageServer, Route
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job
from tests.worker.conftest import WorkerThread, by_name


def serve_photos(image_server: ImageServer) -> dict[str, str]:
    """Every drawn photo on the image server (and a URL that answers 404): name → URL."""
    drawn = {"clean": photos.clean, "transparent": photos.transparent, **photos.UNUSABLE}
    urls = {}
    for name, draw in drawn.items():
        data = draw()
        content_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        image_server.routes[f"/{name}"] = Route(body=data, headers={"Content-Type": content_type})
        urls[name] = by_name(image_server.url(f"/{name}"))
    urls["missing"] = by_name(image_server.url("/missing.jpg"))
    return urls


def test_the_clean_photo_is_chosen_whatever_its_place_in_the_list(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    urls = serve_photos(image_server)
    others = ["missing", *sorted(photos.UNUSABLE)]
    orders = {
        "clean-first": ["clean", *others],
        "clean-last": [*others, "clean"],
        "clean-in-the-middle": [*others[:2], "clean", *others[2:]],
    }
    start_worker(e2e_settings(photo_candidates=len(others) + 1))
    r = redis.Redis.from_url(redis_url)
    for job_id, names in orders.items():
        r.lpush("celery", json.dumps(guide_job(job_id, [urls[name] for name in names])))
    for job_id, names in orders.items():
        body = final(webhook_receiver, job_id, 120)
        assert body["status"] == "completed", body
        metadata = body["metadata"]
        assert metadata["image_url"] == urls["clean"]
        report = metadata["photo_choice"]
        assert report["mode"] == "strict" and report["chosen"] == urls["clean"]
        candidates = {candidate["url"]: candidate for candidate in report["candidates"]}
        assert [candidate["url"] for candidate in report["candidates"]] == [urls[name] for name in names]
        assert candidates[urls["clean"]]["problems"] == []
        assert "HTTP 404" in candidates[urls["missing"]]["error"]  # one failed download fails nothing
        for name, code in photos.PROBLEM_OF.items():
            assert [problem["code"] for problem in candidates[urls[name]]["problems"]] == [code], name
        # The first job meshes the clean photo; the others copy its files (the asset cache).
        assert set(metadata["timings_ms"]) >= {"download", "check"}
        assert ("inference" in metadata["timings_ms"]) is (metadata["cache"]["hit"] is False)


def test_only_unusable_photos_fail_in_strict_and_complete_with_their_problems_in_warn(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    urls = serve_photos(image_server)
    unusable = [urls[name] for name in sorted(photos.UNUSABLE)]
    r = redis.Redis.from_url(redis_url)
    strict = start_worker(e2e_settings())
    r.lpush("celery", json.dumps(guide_job("only-cut-off", [urls["cut_off_right"]])))
    r.lpush("celery", json.dumps(guide_job("all-unusable", unusable)))

    one = final(webhook_receiver, "only-cut-off")
    assert one["status"] == "failed"
    assert one["errorMessage"] == (f"photo {urls['cut_off_right']}: the product touches the right edge of the photo: "
                                   "use one that shows all of it")
    assert one["metadata"]["kind"] == "permanent" and one["metadata"]["stage"] == "check"
    (candidate,) = one["metadata"]["photo_choice"]["candidates"]
    assert candidate["measures"]["cut_off_sides"] == ["right"]
    every = final(webhook_receiver, "all-unusable")
    assert every["status"] == "failed" and every["errorMessage"].startswith("none of the 4 photos can be used: 1) ")
    for name, url in zip(sorted(photos.UNUSABLE), unusable):
        assert url in every["errorMessage"], name
    assert "no product found against the background" in every["errorMessage"]
    assert "chosen" not in every["metadata"]["photo_choice"]

    # The backend, told of the refusal, may ask for this one job to be meshed all the same.
    r.lpush("celery", json.dumps(guide_job("asked-to-warn", [urls["cut_off_right"]], metadata={"photo_check_mode": "warn"})))
    r.lpush("celery", json.dumps(guide_job("asked-unknown", [urls["clean"]], photo_check_mode="lax")))
    asked = final(webhook_receiver, "asked-to-warn", 120)
    assert asked["status"] == "completed", asked
    assert asked["metadata"]["photo_choice"]["mode"] == "warn"
    assert asked["metadata"]["photo_choice"]["chosen"] == urls["cut_off_right"]
    unknown = final(webhook_receiver, "asked-unknown")
    assert unknown["status"] == "failed" and unknown["metadata"]["stage"] == "intake"
    assert "photo_check_mode must be one of strict, warn, off, got 'lax'" in unknown["errorMessage"]
    strict.stop()

    start_worker(e2e_settings(photo_check="warn"))
    r.lpush("celery", json.dumps(guide_job("warned", unusable)))
    warned = final(webhook_receiver, "warned", 120)
    assert warned["status"] == "completed", warned
    report = warned["metadata"]["photo_choice"]
    assert report["mode"] == "warn" and report["chosen"] == warned["metadata"]["image_url"] in unusable
    chosen = next(candidate for candidate in report["candidates"] if candidate["url"] == report["chosen"])
    assert len(chosen["problems"]) == 1 and chosen["problems"][0]["code"] != NO_OBJECT


def test_off_meshes_the_first_photo_that_downloads_unchecked(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    urls = serve_photos(image_server)
    start_worker(e2e_settings(photo_check="off"))
    redis.Redis.from_url(redis_url).lpush(
        "celery", json.dumps(guide_job("unchecked", [urls["missing"], urls["two_products"], urls["clean"]])))
    body = final(webhook_receiver, "unchecked", 120)
    assert body["status"] == "completed", body
    assert body["metadata"]["image_url"] == urls["two_products"]
    assert body["metadata"]["photo_choice"] == {"mode": "off"}
    assert "check" not in body["metadata"]["timings_ms"]


async def test_a_triton_without_the_photo_check_is_named_at_start_up_unless_the_check_is_off(
    start_triton: Callable[..., LocalTriton], analytic_repository: Path, tmp_path: Path,
) -> None:
    repository = tmp_path / "exported-before-the-check"
    shutil.copytree(analytic_repository, repository, symlinks=True)
    shutil.rmtree(repository / PHOTO_CHECK)
    server = start_triton(repository, copy=False)
    client = TritonMeshClient(server.grpc_url)
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            await client.wait_ready(60)  # the mesh ensemble is served
            with pytest.raises(TritonUnavailable, match=f"model '{PHOTO_CHECK}' .* is not ready"):
                await PhotoChoice("strict", 4, client, DownloadLimits(), http).wait_ready(0)
            await PhotoChoice("off", 4, client, DownloadLimits(), http).wait_ready(0)
    finally:
        await client.close()


def test_urls_are_tried_in_order_up_to_image_urls_max_until_a_usable_photo_and_more_are_refused(
    e2e_settings: Callable[..., Settings], worker_process: Callable[[Settings], subprocess.Popen[bytes]],
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    """The rule of docs/photo-check.md, "Which photos are checked": PHOTO_CANDIDATES (4) usable photos
    are looked for among the URLs in order, up to IMAGE_URLS_MAX (10); a job with more is refused."""
    urls = serve_photos(image_server)
    dead = [by_name(image_server.url(f"/dead-{index}.jpg")) for index in range(4)]
    unusable = [urls[name] for name in sorted(photos.UNUSABLE)]
    worker_process(e2e_settings())
    r = redis.Redis.from_url(redis_url)
    jobs = {"fifth-after-four-dead": [*dead, urls["clean"]],
            "fifth-after-four-unusable": [*unusable, urls["clean"]],
            "tenth": [*dead, *unusable, urls["missing"], urls["clean"]]}
    for job_id, job_urls in jobs.items():
        r.lpush("celery", json.dumps(guide_job(job_id, job_urls)))
    for job_id, job_urls in jobs.items():
        body = final(webhook_receiver, job_id, 120)
        assert body["status"] == "completed", body
        assert body["metadata"]["image_url"] == urls["clean"]
        report = body["metadata"]["photo_choice"]
        assert [candidate["url"] for candidate in report["candidates"]] == job_urls  # each tried, in order

    requests = len(image_server.hosts_seen)
    eleven = [*dead, *unusable, urls["missing"], urls["clean"], urls["transparent"]]
    r.lpush("celery", json.dumps(guide_job("eleven-urls", eleven)))
    refused = final(webhook_receiver, "eleven-urls")
    assert refused["status"] == "failed"
    assert refused["metadata"] == {"attempts": 1, "stage": "intake", "kind": "permanent"}
    assert refused["errorMessage"] == ("malformed job: 'image_urls' lists 11 URLs, more than the 10 a job may have "
                                       "(IMAGE_URLS_MAX): send the product's 10 best photos, best first")
    assert len(image_server.hosts_seen) == requests  # refused before any download
