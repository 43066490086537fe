"""The worker as a Celery worker would be, seen from real producers: Python `celery` (results, chains,
callbacks, errbacks, priorities, ETAs) and the npm clients `celery-node` and `celery-ts`. Follow-up
tasks run on a real Celery worker (celery.contrib.testing) consuming their own queue."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain
from celery.contrib.testing.worker import start_worker as start_celery_worker

from client_worker.config import Settings
from tests.support.image_server import ImageServer
from tests.support.node_celery import NodeCelery
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import final, settings_environment, statuses, wait_until
from tests.worker.conftest import WorkerThread, by_name

TASK = "generate_3d_model"


def job(job_id: str, image_urls: list[str]) -> dict[str, Any]:
    return {"job_id": job_id, "shop": "test-shop.myshopify.com", "product_id": "gid://shopify/Product/123",
            "image_urls": image_urls, "metadata": {}}


@pytest.fixture
def producer(celery_producer: Celery, redis_url: str) -> Iterator[Celery]:
    """The backend's Celery app, with a result backend, plus the follow-up tasks its other worker runs."""
    app = celery_producer
    notes = redis.Redis.from_url(redis_url)

    @app.task(name="tests.model_url", shared=False)
    def model_url(result: dict[str, Any]) -> str:
        return result["model_url"]

    @app.task(name="tests.note", shared=False)
    def note(value: Any, key: str) -> None:
        notes.set(key, json.dumps(value))

    yield app
    notes.close()


@pytest.fixture
def celery_worker(producer: Celery) -> Iterator[None]:
    """A real Celery worker for the follow-up tasks (queue `post`); it never sees our `celery` list."""
    with start_celery_worker(producer, pool="solo", queues=["post"], perform_ping_check=False, loglevel="WARNING",
                             shutdown_timeout=10):
        yield


@pytest.fixture
def worker(e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread],
           backend_url: str) -> WorkerThread:
    return start_worker(e2e_settings(result_backend_url=backend_url))


def test_async_result_get_gives_the_model_or_raises_the_failure(
    worker: WorkerThread, producer: Celery, photo_url: str, image_server: ImageServer,
) -> None:
    done = producer.send_task(TASK, kwargs=job("result-ok", [photo_url])).get(timeout=90)
    assert done["job_id"] == "result-ok" and done["status"] == "completed"
    assert done["model_url"].endswith("/test-shop.myshopify.com/products/123/result-ok.glb")

    failing = producer.send_task(TASK, kwargs=job("result-404", [by_name(image_server.url("/gone.jpg"))]))
    with pytest.raises(Exception, match="HTTP 404") as caught:
        failing.get(timeout=90)
    assert type(caught.value).__name__ == "JobFailed"
    assert failing.state == "FAILURE"


def test_chains_callbacks_and_errbacks_continue_on_a_celery_worker(
    worker: WorkerThread, celery_worker: None, producer: Celery, photo_url: str, image_server: ImageServer,
    redis_url: str,
) -> None:
    notes = redis.Redis.from_url(redis_url)
    chained = chain(producer.signature(TASK, kwargs=job("chained", [photo_url])),
                    producer.signature("tests.model_url", queue="post")).apply_async()
    model_url = chained.get(timeout=90)
    assert model_url.endswith("/products/123/chained.glb")
    assert chained.parent.get(timeout=5)["model_url"] == model_url  # A's own result, with B's argument

    producer.send_task(TASK, kwargs=job("linked", [photo_url]),
                       link=producer.signature("tests.note", kwargs={"key": "callback"}, queue="post"))
    wait_until(lambda: notes.get("callback"), 90, "the callback to run")
    assert json.loads(notes.get("callback"))["job_id"] == "linked"

    failing = producer.send_task(TASK, kwargs=job("erring", [by_name(image_server.url("/gone.jpg"))]),
                                 link_error=producer.signature("tests.note", kwargs={"key": "errback"}, queue="post"))
    wait_until(lambda: notes.get("errback"), 90, "the errback to run")
    assert json.loads(notes.get("errback")) == failing.id  # Celery's errback gets the failed task's id

    broken = chain(producer.signature(TASK, kwargs=job("broken-chain", [by_name(image_server.url("/gone.jpg"))])),
                   producer.signature("tests.model_url", queue="post")).apply_async()
    with pytest.raises(Exception, match="HTTP 404"):
        broken.get(timeout=90)  # the chain's last task failed with the job, as on a Celery worker
    notes.close()


@pytest.mark.parametrize(
    ("transport_options", "priority", "list_name"),
    [({}, 9, "celery\x06\x169"), ({"priority_steps": list(range(10)), "sep": ":"}, 5, "celery:5")],
    ids=["kombu-defaults", "ten-steps-colon"],
)
def test_every_priority_list_the_producer_writes_is_consumed(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, transport_options: dict[str, Any], priority: int,
    list_name: str,
) -> None:
    app = Celery("backend", broker=redis_url)
    app.conf.broker_transport_options = transport_options
    job_id = f"priority-{priority}"
    app.send_task(TASK, kwargs=job(job_id, [photo_url]), priority=priority)
    r = redis.Redis.from_url(redis_url)
    assert r.llen(list_name) == 1  # where kombu put it
    steps = transport_options.get("priority_steps", [0, 3, 6, 9])
    start_worker(e2e_settings(priority_steps=steps, priority_separator=transport_options.get("sep", "\x06\x16")))
    assert final(webhook_receiver, job_id)["status"] == "completed"
    app.close()


def test_messages_in_lists_the_worker_does_not_read_are_reported_until_the_setting_matches(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    redis_url: str, webhook_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    """A backend with ten priority steps, and one with the `:` separator, against a worker left at
    kombu's defaults: the log, the metric and the health check name the lists and the fix."""
    ten_steps = Celery("backend", broker=redis_url)
    ten_steps.conf.broker_transport_options = {"priority_steps": list(range(10))}
    ten_steps.send_task(TASK, kwargs=job("stranded-5", [photo_url]), priority=5)
    colon = Celery("backend", broker=redis_url)
    colon.conf.broker_transport_options = {"priority_steps": list(range(10)), "sep": ":"}
    colon.send_task(TASK, kwargs=job("stranded-3", [photo_url]), priority=3)
    r = redis.Redis.from_url(redis_url)
    assert r.llen("celery\x06\x165") == 1 and r.llen("celery:3") == 1  # where kombu put them

    settings = e2e_settings(metrics_port=0)
    blind = start_worker(settings)
    line = wait_until(lambda: next((record for record in caplog.records if "does not read" in record.getMessage()),
                                   None), 30, "the stranded-list error")
    assert line.levelname == "ERROR"  # type: ignore[attr-defined]
    text = line.getMessage()  # type: ignore[attr-defined]
    assert r"celery\x06\x165 (1), celery:3 (1)" in text
    assert r"set PRIORITY_STEPS=0,1,2,3,4,5,6,7,8,9 and PRIORITY_SEPARATOR=\x06\x16 or :" in text
    registry = blind.worker.metrics.registry  # type: ignore[union-attr]
    wait_until(lambda: registry.get_sample_value("img2mesh_worker_stranded_messages") == 2, 30, "the gauge")
    health = subprocess.run([sys.executable, "-m", "client_worker", "healthcheck"], env=settings_environment(settings),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stderr
    report = json.loads(health.stdout)
    assert report["stranded_messages"] == {r"celery\x06\x165": 1, "celery:3": 1}
    assert "PRIORITY_STEPS=0,1,2,3,4,5,6,7,8,9" in report["advice"]
    assert statuses(webhook_receiver, "stranded-5") == []  # nobody read it
    blind.stop()

    start_worker(e2e_settings(priority_steps=list(range(10))))
    start_worker(e2e_settings(priority_steps=list(range(10)), priority_separator=":"))
    assert final(webhook_receiver, "stranded-5")["status"] == "completed"
    assert final(webhook_receiver, "stranded-3")["status"] == "completed"
    ten_steps.close()
    colon.close()


def test_following_the_stranded_advice_strands_no_priority_and_the_health_check_can_fail_on_them(
    e2e_settings: Callable[..., Settings], worker_process: Callable[[Settings], subprocess.Popen[bytes]],
    photo_url: str, redis_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    """A producer with ten priority steps has sent every priority but 4 and 8 so far; a worker left at
    kombu's steps advises settings that, once followed, also read the priorities not seen yet."""
    producer = Celery("backend", broker=redis_url)
    producer.conf.broker_transport_options = {"priority_steps": list(range(10)), "sep": ":"}
    seen = [0, 1, 2, 3, 5, 6, 7, 9]
    for priority in seen:
        producer.send_task(TASK, kwargs=job(f"priority-{priority}", [photo_url]), priority=priority)
    blind = e2e_settings(worker_name="blind-host")
    first = worker_process(blind)
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
    env = settings_environment(blind)
    assert health(env, tmp_path).returncode == 0  # stranded messages alone do not make a worker unhealthy
    refused = health(env, tmp_path, "--fail-on-stranded")
    assert refused.returncode == 1, refused.stderr
    report = json.loads(refused.stdout)
    assert report["healthy"] is False
    assert set(report["stranded_messages"]) == {f"celery:{priority}" for priority in seen if priority}
    assert refused.stderr.startswith("unhealthy: messages wait in priority lists this worker does not read")
    advice = re.search(r"set PRIORITY_STEPS=([\d,]+) and PRIORITY_SEPARATOR=(\S+?), ", report["advice"])
    assert advice, report["advice"]
    steps, separator = [int(step) for step in advice.group(1).split(",")], advice.group(2)
    assert (steps, separator) == (list(range(10)), ":")
    first.terminate()
    first.wait(30)

    advised = e2e_settings(worker_name="advised-host", priority_steps=steps, priority_separator=separator)
    worker_process(advised)
    for priority in (4, 8):  # the priorities nobody had sent yet
        producer.send_task(TASK, kwargs=job(f"priority-{priority}", [photo_url]), priority=priority)
    for priority in range(10):
        assert final(webhook_receiver, f"priority-{priority}", 120)["status"] == "completed", priority
    healthy = health(settings_environment(advised), tmp_path, "--fail-on-stranded")
    assert healthy.returncode == 0, healthy.stderr
    assert "stranded_messages" not in json.loads(healthy.stdout)
    producer.close()


def health(env: dict[str, str], cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client_worker", "healthcheck", *flags], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_an_eta_job_is_announced_then_runs_and_a_bad_eta_fails(
    worker: WorkerThread, producer: Celery, photo_url: str, webhook_receiver: WebhookReceiver, redis_url: str,
) -> None:
    sent = time.time()
    producer.send_task(TASK, kwargs=job("later", [photo_url]), countdown=4)
    announced = wait_until(lambda: webhook_receiver.accepted("later"), 10, "the scheduled announcement")[0]
    assert announced["status"] == "processing" and announced["metadata"]["stage"] == "scheduled"
    assert abs(_unix(announced["metadata"]["eta"]) - (sent + 4)) < 2
    assert final(webhook_receiver, "later", 60)["status"] == "completed"
    started = [body for body in webhook_receiver.accepted("later") if body["metadata"].get("stage") == "download"]
    assert started and time.time() - sent >= 4

    envelope = json.loads(_raw_celery_message(producer, job("bad-eta", [photo_url])))
    envelope["headers"]["eta"] = "next tuesday"
    redis.Redis.from_url(redis_url).lpush("celery", json.dumps(envelope))
    failed = final(webhook_receiver, "bad-eta")
    assert failed["status"] == "failed" and failed["metadata"]["kind"] == "permanent"
    assert "the Celery 'eta' is not an ISO-8601 time: 'next tuesday'" in failed["errorMessage"]


def test_node_producers_celery_node_with_its_result_and_celery_ts_with_gzip(
    worker: WorkerThread, node_celery: NodeCelery, photo_url: str, redis_url: str, backend_url: str,
    webhook_receiver: WebhookReceiver,
) -> None:
    sent, answer = node_celery.send("celery-node", redis_url, TASK, kwargs=job("from-node", [photo_url]),
                                    backend=backend_url, wait_s=90)
    assert answer["result"]["job_id"] == "from-node" and answer["result"]["status"] == "completed", answer
    node_celery.send("celery-ts", redis_url, TASK, kwargs=job("from-celery-ts-gzip", [photo_url]), compression=True)
    assert final(webhook_receiver, "from-celery-ts-gzip")["status"] == "completed"
    assert statuses(webhook_receiver, "from-node")[-1] == "completed"
    assert sent["task_id"]


def _raw_celery_message(app: Celery, kwargs: dict[str, Any]) -> bytes:
    """What `send_task` writes, captured from a queue nobody consumes."""
    queue = f"capture-{uuid.uuid4().hex}"
    app.send_task(TASK, kwargs=kwargs, queue=queue)
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        (raw,) = client.lrange(queue, 0, -1)
        client.delete(queue)
    finally:
        client.close()
    return raw


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_an_expired_task_is_revoked_as_a_celery_worker_would(
    worker: WorkerThread, producer: Celery, photo_url: str, webhook_receiver: WebhookReceiver,
) -> None:
    from celery.exceptions import TaskRevokedError

    late = producer.send_task(TASK, kwargs=job("expired", [photo_url]), expires=-1)
    with pytest.raises(TaskRevokedError, match="expired"):
        late.get(timeout=60)
    assert late.state == "REVOKED"
    assert final(webhook_receiver, "expired")["metadata"]["kind"] == "expired"
