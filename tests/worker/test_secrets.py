"""No credential of the settings reaches a log line, a webhook, a status record, a Celery result,
a dead letter, the health output or a metric (client_worker/redaction.py).

Every setting that is or may carry a credential gets a distinct marker, and a real worker process
goes through start-up, a completed job, a job failed by storage (whose error text quotes the
service-role key, as a hostile or careless server might), a job failed by its download, a Redis
outage and shutdown. Then every text the worker produced is searched for every marker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from client_worker.config import Settings
from local_triton import free_port
from tests.support.image_server import ImageServer
from tests.support.redis_server import RedisServer
from tests.support.supabase_server import SupabaseStorageServer
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import REPOSITORY_ROOT, final, guide_job, settings_environment, start_worker_process, wait_until
from tests.worker.conftest import by_name

MARKERS = {
    "redis password": "redis-pw-3f9a1c",
    "result backend user": "results-user-8d2e",
    "result backend password": "results-pw-5b7c0d",
    "backend user": "hook-user-1e4f",
    "backend password": "hook-pw-9a6b2c",
    "service role key": "service-key-7c3d5e",
    "webhook secret": "hmac-secret-2f8a4b",
}
RESULTS_DB = 1


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis whose default user needs the marked password, with a marked ACL user for results."""
    server = RedisServer(tmp_path / "redis", password=MARKERS["redis password"])
    server.directory.mkdir()
    server.start()
    add_results_user(server)
    try:
        yield server
    finally:
        server.stop()


def add_results_user(server: RedisServer) -> None:
    with server.client() as client:
        client.acl_setuser(MARKERS["result backend user"], enabled=True,
                           passwords=[f"+{MARKERS['result backend password']}"], keys=["*"], channels=["*"],
                           commands=["+@all"])


@pytest.fixture
def keyed_storage() -> Iterator[SupabaseStorageServer]:
    server = SupabaseStorageServer(service_role_key=MARKERS["service role key"]).start()
    server.create_bucket("3d-models")
    try:
        yield server
    finally:
        server.stop()


def test_no_credential_reaches_any_text_the_worker_produces(
    e2e_settings: Callable[..., Settings], secret_redis: RedisServer, keyed_storage: SupabaseStorageServer,
    webhook_receiver: WebhookReceiver, photo_url: str, image_server: ImageServer, tmp_path: Path,
) -> None:
    host = webhook_receiver.url.removeprefix("http://")
    metrics_port = free_port()
    settings = e2e_settings(
        redis_url=secret_redis.url,
        result_backend_url=(f"redis://{MARKERS['result backend user']}:{MARKERS['result backend password']}"
                            f"@127.0.0.1:{secret_redis.port}/{RESULTS_DB}"),
        backend_url=f"http://{MARKERS['backend user']}:{MARKERS['backend password']}@{host}",
        supabase_url=keyed_storage.url, supabase_service_role_key=MARKERS["service role key"],
        webhook_secret=MARKERS["webhook secret"], metrics_port=metrics_port, max_attempts=1,
    )
    texts: dict[str, str] = {}
    r = secret_redis.client()
    worker = start_worker_process(settings, tmp_path)
    try:
        wait_until(lambda: r.smembers("img2mesh:workers"), 60, "the worker process to register")
        texts["healthcheck"] = healthcheck(settings, tmp_path)

        completed, refused, missing = (str(uuid.uuid4()) for _ in range(3))
        r.lpush("celery", json.dumps(guide_job(completed, [photo_url])))
        assert final(webhook_receiver, completed, 120)["status"] == "completed"

        key = MARKERS["service role key"]
        # The same photo: the copy of the first job's files (the asset cache) is refused first, then the
        # upload of the model run it falls back to; both refusals quote the key.
        keyed_storage.fail_next(400, {"statusCode": "400", "error": "InvalidKey",
                                      "message": f"key refused for apikey {key} (Bearer {key})"}, times=2)
        r.lpush("celery", json.dumps(guide_job(refused, [photo_url])))
        refusal = final(webhook_receiver, refused, 120)
        assert refusal["status"] == "failed" and "***" in refusal["errorMessage"], refusal

        r.lpush("celery", json.dumps(guide_job(missing, [by_name(image_server.url("/missing.jpg"))])))
        assert final(webhook_receiver, missing, 120)["status"] == "failed"
        texts["metrics"] = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        texts.update(stored_texts(r, secret_redis))  # before the outage, which empties this Redis

        secret_redis.stop()
        wait_until(lambda: "Redis unreachable" in (tmp_path / "worker.log").read_text(), 60, "the outage in the log")
        texts["healthcheck during the outage"] = healthcheck(settings, tmp_path)
        secret_redis.start()
        add_results_user(secret_redis)
        wait_until(lambda: r.keys("img2mesh:heartbeat:*"), 60, "the worker's heartbeat after the outage")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
    assert worker.returncode == 0

    texts["log"] = (tmp_path / "worker.log").read_text()
    assert '"msg": "worker starting"' in texts["log"] and "***" in texts["log"]
    assert "copying a cached asset failed" in texts["log"]
    for index, delivery in enumerate(webhook_receiver.deliveries):
        texts[f"webhook {index}"] = delivery.body.decode()
    assert any(name.startswith("result ") for name in texts), "no Celery result was written"
    assert any(name.startswith("redis img2mesh:dead") for name in texts), "no dead letter was written"

    leaks = [f"{what}: the {secret}" for what, text in texts.items() for secret, marker in MARKERS.items() if marker in text]
    assert not leaks, "\n".join(leaks)


def test_a_supabase_url_with_user_info_is_refused_without_showing_it(tmp_path: Path) -> None:
    marker = "supabase-pw-4d1e7a"
    result = subprocess.run(
        [sys.executable, "-m", "client_worker", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPOSITORY_ROOT),
             "SUPABASE_URL": f"https://user:{marker}@project.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "key"},
    )
    assert result.returncode == 2
    assert "SUPABASE_URL: must not carry a user or password" in result.stderr
    assert marker not in result.stdout + result.stderr


def stored_texts(client: redis.Redis, server: RedisServer) -> dict[str, str]:
    """Everything the worker keeps in Redis (statuses, outbox, dead letters) and the Celery results."""
    texts = {f"redis {name.decode()}": repr(redis_value(client, name.decode()))
             for name in client.scan_iter("img2mesh:*")}
    with redis.Redis(host="127.0.0.1", port=server.port, db=RESULTS_DB, password=MARKERS["redis password"]) as results:
        texts.update({f"result {name.decode()}": results.get(name).decode()
                      for name in results.scan_iter("celery-task-meta-*")})
    return texts


def healthcheck(settings: Settings, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "client_worker", "healthcheck"], env=settings_environment(settings),
                            cwd=cwd, capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def redis_value(client: redis.Redis, name: str) -> object:
    kind = client.type(name).decode()
    if kind == "hash":
        return client.hgetall(name)
    if kind == "list":
        return client.lrange(name, 0, -1)
    if kind == "zset":
        return client.zrange(name, 0, -1)
    if kind == "set":
        return client.smembers(name)
    return client.get(name)
