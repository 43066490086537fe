"""What tests/worker/test_egress.py runs where only loopback exists: the README's demo, and a worker
process from start-up through one job to shutdown. Its name is not `test_*`, so a plain pytest run
does not collect it; test_egress.py names it explicitly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from client_worker.config import Settings
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import REPOSITORY_ROOT, final, guide_job, start_worker_process, wait_until


def test_the_readme_demo(tmp_path: Path) -> None:
    """Exporter, local tritonserver and `client_worker generate`, as README's first command runs them."""
    work = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "scripts/demo.sh", "--weights", "generated", "--no-setup", "--work", str(work),
         "--out", str(work / "model.glb")],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {"model.glb", "model.usdz", "poster.png"} <= {path.name for path in work.iterdir()}


def test_a_worker_process_through_one_job(
    e2e_settings: Callable[..., Settings], photo_url: str, redis_url: str, webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    worker = start_worker_process(e2e_settings(), tmp_path)
    try:
        r = redis.Redis.from_url(redis_url)
        wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
        job_id = str(uuid.uuid4())
        r.lpush("celery", json.dumps(guide_job(job_id, [photo_url])))
        assert final(webhook_receiver, job_id, 120)["status"] == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
