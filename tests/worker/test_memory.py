"""A worker process's memory around one 36-megapixel photo: bounded while it runs, given back after."""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from client_worker.config import Settings
from tests.support.image_server import ImageServer, Route
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, guide_job, start_worker_process, wait_until
from tests.worker.conftest import by_name


def memory_mib(pid: int) -> dict[str, float]:
    """`VmRSS` (resident now) and `VmHWM` (the peak so far) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def large_photo() -> bytes:
    """A 7360×4912 (36 MP) JPEG: smooth, so the file stays small while the pixels are many."""
    ramp = np.linspace(0, 255, 7360, dtype=np.uint8)[None, :].repeat(4912, 0)
    picture = np.stack([ramp, ramp[::-1], np.full_like(ramp, 128)], -1)
    picture[1500:3400, 2500:4800] = (200, 40, 40)  # a product in the middle
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_a_36_megapixel_photo_costs_little_memory_and_leaves_none_behind(
    e2e_settings: Callable[..., Settings], product_photo: bytes, image_server: ImageServer, redis_url: str,
    webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    image_server.routes["/small.jpg"] = Route(body=product_photo)
    image_server.routes["/large.jpg"] = Route(body=large_photo())
    r = redis.Redis.from_url(redis_url)
    # The ramp is no plain background, so the photo check finds no clean product: `warn` meshes it
    # anyway, through the whole path a checked photo takes.
    process = start_worker_process(e2e_settings(concurrency=1, photo_check="warn"), tmp_path)
    try:
        wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
        for warm_up in ("warm-up-1", "warm-up-2"):  # imports, connections and allocator pools in place
            r.lpush("celery", json.dumps(guide_job(warm_up, [by_name(image_server.url("/small.jpg"))])))
            assert final(webhook_receiver, warm_up, 60)["status"] == "completed"
        before = memory_mib(process.pid)

        r.lpush("celery", json.dumps(guide_job("large", [by_name(image_server.url("/large.jpg"))])))
        completed = final(webhook_receiver, "large", 120)
        assert completed["status"] == "completed", completed
        wait_until(lambda: memory_mib(process.pid)["VmRSS"] - before["VmRSS"] < 40, 10, "the memory to be given back")
        after = memory_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print("worker memory (MiB) before, after:", before, after)
    # A full decode of 36 MP into RGBA takes 140 MiB (and Pillow's copy 100 more); checking it at a
    # JPEG's 1/8 scale takes a few.
    assert after["VmHWM"] - before["VmHWM"] < 80, (before, after)
