"""`python -m client_worker`: generate, enqueue, healthcheck, dead-letters, run as processes; and no torch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from client_worker.config import Settings
from export.u2net_models import U2NETP
from local_triton import LocalTriton, free_port
from tests.support.gltf_validator import GltfValidator
from tests.support.image_server import ImageServer, Route
from tests.support.redis_server import RedisServer
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker_jobs import REPOSITORY_ROOT, final, guide_job, settings_environment, statuses, wait_until
from tests.worker.conftest import E2E_RESOLUTION, WorkerThread, by_name


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPOSITORY_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "client_worker", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def generate_fast(photo: bytes, output: Path, triton: LocalTriton, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`generate` on a photo file at the `fast` preset and the end-to-end tests' resolution."""
    path = cwd / "mug.jpg"
    path.write_bytes(photo)
    return cli(["generate", str(path), "-o", str(output), "--preset", "fast", "--triton-url", triton.grpc_url],
               cwd, {"MAX_RESOLUTION": str(E2E_RESOLUTION)})


def test_generate_writes_glb_usdz_and_poster_side_by_side(
    triton_server: LocalTriton, product_photo: bytes, tmp_path: Path, gltf_validator: GltfValidator,
) -> None:
    output = tmp_path / "out" / "mug.glb"
    result = generate_fast(product_photo, output, triton_server, tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["preset"] == "fast" and summary["weights_version"] == "1"
    # The U²-Net that cut the product out, as the exporter recorded it for the served rembg version.
    assert summary["background_removal"] == {"version": 1, "name": "u2netp", "md5": U2NETP.md5}
    report = gltf_validator.assert_valid(output.read_bytes())
    assert summary["faces"] == report["info"]["totalTriangleCount"] > 0
    folder = tmp_path / "out"
    assert summary["files"] == {"model": str(output), "usdz": str(folder / "mug.usdz"),
                                "poster": str(folder / "poster.png")}
    assert sorted(path.name for path in folder.iterdir()) == ["mug.glb", "mug.usdz", "poster.png"]


def test_generate_and_the_queue_worker_make_byte_identical_files(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    product_photo: bytes, triton_server: LocalTriton, redis_url: str, webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    """Both go through the one pipeline core: same photo, preset and weights give the same bytes,
    for the GLB, the USDZ and the poster."""
    start_worker(e2e_settings())
    job_id = str(uuid.uuid4())
    redis.Redis.from_url(redis_url).lpush("celery", json.dumps(guide_job(job_id, [photo_url], quality="fast")))
    completed = final(webhook_receiver, job_id)
    assert completed["status"] == "completed", completed
    metadata = completed["metadata"]
    urls = {"model": completed["modelUrl"], "usdz": metadata["usdz_url"], "poster": metadata["poster_url"]}

    output = tmp_path / "generated" / "mug.glb"
    result = generate_fast(product_photo, output, triton_server, tmp_path)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    for role, url in urls.items():
        assert Path(files[role]).read_bytes() == httpx.get(url).content, role
    assert json.loads(result.stdout)["faces"] == metadata["face_count"]


def test_generate_explains_a_bad_image(triton_server: LocalTriton, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = cli(["generate", str(text), "-o", str(tmp_path / "x.glb"), "--triton-url", triton_server.grpc_url],
                 tmp_path)
    assert result.returncode == 1
    assert "the model refused the image" in result.stderr and "JPEG, PNG or WebP" in result.stderr
    assert list(tmp_path.iterdir()) == [text], "nothing written"


def test_enqueue_and_healthcheck_against_a_running_worker(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], photo_url: str,
    tmp_path: Path,
) -> None:
    settings = e2e_settings(worker_name="cli-test-host")
    env = settings_environment(settings)
    assert cli(["healthcheck"], tmp_path, env).returncode == 1  # nobody running yet
    worker = start_worker(settings)
    health = cli(["healthcheck"], tmp_path, env)
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["workers"][0].startswith("cli-test-host:")

    result = cli(["enqueue", photo_url, "--job-id", "from-cli", "--quality", "fast", "--wait", "60"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    pushed, final = (json.loads(line) for line in result.stdout.splitlines())
    assert pushed == {"job_id": "from-cli", "queue": "celery"}
    assert final["status"] == "completed" and final["model_url"].endswith("/from-cli.glb")

    worker.stop()
    assert cli(["healthcheck"], tmp_path, env).returncode == 1


def test_run_refuses_incomplete_configuration(tmp_path: Path) -> None:
    result = cli(["run"], tmp_path, {"STORAGE_BACKEND": "supabase", "CONCURRENCY": "0"})
    assert result.returncode == 2
    assert "CONCURRENCY:" in result.stderr


def test_the_worker_never_imports_torch() -> None:
    code = (
        "import sys, client_worker.__main__, client_worker.worker, client_worker.processing, client_worker.consumer;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dead_letters_are_listed_and_replayed(
    e2e_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerThread], product_photo: bytes,
    image_server: ImageServer, redis_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    settings = e2e_settings()
    start_worker(settings)
    r = redis.Redis.from_url(redis_url)
    late_photo = by_name(image_server.url("/late.jpg"))
    r.lpush("celery", json.dumps(guide_job("late-photo", [late_photo])))
    r.lpush("celery", b"{definitely not json")
    assert final(webhook_receiver, "late-photo")["status"] == "failed"
    wait_until(lambda: r.llen("img2mesh:rejected") == 1, 30, "the message to be rejected")
    env = settings_environment(settings)

    dead = cli(["dead-letters", "list"], tmp_path, env)
    assert dead.returncode == 0, dead.stderr
    (record,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert (record["index"], record["job_id"], record["attempts"]) == (0, "late-photo", 1)
    assert "HTTP 404" in record["reason"] and record["message"].startswith('{"task": "generate_3d_model"')
    (rejected,) = [json.loads(line) for line in cli(["dead-letters", "list", "--rejected"], tmp_path, env)
                   .stdout.splitlines()]
    assert "not JSON" in rejected["reason"] and rejected["message"] == "{definitely not json"

    image_server.routes["/late.jpg"] = Route(body=product_photo)  # the cause is fixed; replay the job
    replayed = cli(["dead-letters", "replay", "--job-id", "late-photo"], tmp_path, env)
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["replayed"] == 1, replayed.stderr
    wait_until(lambda: "completed" in statuses(webhook_receiver, "late-photo"), 60, "the replayed job to complete")
    assert r.llen("img2mesh:dead") == 0
    assert cli(["dead-letters", "replay", "--job-id", "late-photo"], tmp_path, env).returncode == 1  # nothing left

    assert cli(["dead-letters", "replay", "--rejected"], tmp_path, env).returncode == 2  # which ones?
    assert cli(["dead-letters", "replay", "--rejected", "--index", "0"], tmp_path, env).returncode == 0
    wait_until(lambda: r.llen("img2mesh:rejected") == 1 and b"not JSON" in r.lindex("img2mesh:rejected", 0),
               30, "the replayed message to be rejected again")


def test_check_photos_names_each_problem_and_the_photo_a_job_would_mesh(
    triton_server: LocalTriton, image_server: ImageServer, tmp_path: Path,
) -> None:
    from tests.support import photo_check_photos as photos

    paths = {}
    for name, draw in {"clean": photos.clean, **photos.UNUSABLE}.items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(draw())
    image_server.routes["/two.jpg"] = Route(body=photos.two_products())
    url = by_name(image_server.url("/two.jpg"))
    env = {"DOWNLOAD_ALLOWLIST": "localhost", "TRITON_URL": triton_server.grpc_url}
    unusable = [str(paths[name]) for name in sorted(photos.UNUSABLE)]

    result = cli(["check-photos", *unusable, url, str(paths["clean"]), str(tmp_path / "gone.jpg"), "--json"],
                 tmp_path, env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["photo_choice"]
    assert report["mode"] == "strict" and report["chosen"] == str(paths["clean"])
    codes = {candidate["url"]: [problem["code"] for problem in candidate.get("problems", [])]
             for candidate in report["candidates"]}
    assert codes == {**{str(paths[name]): [code] for name, code in photos.PROBLEM_OF.items()},
                     url: ["several_objects"], str(paths["clean"]): [], str(tmp_path / "gone.jpg"): []}
    assert "cannot read the file" in report["candidates"][-1]["error"]

    table = cli(["check-photos", *unusable, "--triton-url", triton_server.grpc_url], tmp_path,
                {"DOWNLOAD_ALLOWLIST": "localhost"})
    assert table.returncode == 1, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["photo", "side", "px", "objects", "undecided", "cut", "off", "problems"]
    for name, code in photos.PROBLEM_OF.items():
        (line,) = [line for line in lines if str(paths[name]) in line]
        assert line.rstrip().endswith(code) and not line.startswith("*"), line
    assert lines[-1] == "PHOTO_CHECK=strict: no photo is usable: a job would fail"


def test_a_dependency_that_fails_at_start_is_named_in_one_line_without_its_secret(
    make_settings: Callable[..., Settings], redis_server: RedisServer, tmp_path: Path,
) -> None:
    """`run` against an unreachable Redis, a wrong or missing password, TLS to a plain port, an
    unreachable result backend, no Triton, a taken metrics port: one line each, exit 1, no traceback,
    no credential; `healthcheck` and `dead-letters` say the same of Redis."""
    guarded = RedisServer(tmp_path / "guarded", password="the-right-secret-4711")
    guarded.directory.mkdir()
    guarded.start()
    closed = free_port()
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    wrong = "not-the-secret-0815"
    good = redis_server.url
    cases = {
        f"redis://127.0.0.1:{closed}/0": (
            {}, f"cannot reach Redis at 127.0.0.1:{closed} (REDIS_URL): connection refused"),
        f"redis://:{wrong}@127.0.0.1:{guarded.port}/0": (
            {}, f"Redis at 127.0.0.1:{guarded.port} (REDIS_URL) refused the credentials"),
        f"redis://127.0.0.1:{guarded.port}/0": (
            {}, f"Redis at 127.0.0.1:{guarded.port} (REDIS_URL) requires a password and REDIS_URL has none"),
        f"rediss://:{wrong}@127.0.0.1:{guarded.port}/0": (
            {"redis_timeout_s": 1.5},
            f"cannot reach Redis at 127.0.0.1:{guarded.port} (REDIS_URL): no answer in time; rediss:// expects TLS"),
        good: ({"result_backend_url": f"redis://:{wrong}@127.0.0.1:{closed}/1"},
               f"cannot reach Redis at 127.0.0.1:{closed} (RESULT_BACKEND_URL): connection refused"),
    }
    try:
        for url, (overrides, expected) in cases.items():
            env = settings_environment(make_settings(require_storage=True, redis_url=url, **overrides))
            result = cli(["run"], tmp_path, env)
            assert result.returncode == 1, (url, result.stderr)
            assert_one_line(result.stderr, f"worker not started: {expected}", wrong)
            if "RESULT_BACKEND_URL" in expected:
                continue
            for command, prefix in ((["healthcheck"], "unhealthy"), (["dead-letters", "list"], "dead-letters failed")):
                checked = cli(command, tmp_path, env)
                assert checked.returncode == 1, (command, checked.stderr)
                assert_one_line(checked.stderr, f"{prefix}: {expected}", wrong)

        triton = settings_environment(make_settings(require_storage=True, triton_url=f"127.0.0.1:{closed}",
                                                    triton_ready_timeout_s=0))
        result = cli(["run"], tmp_path, triton)
        assert result.returncode == 1, result.stderr
        assert_one_line(result.stderr, f"worker not started: Triton at 127.0.0.1:{closed} (TRITON_URL): ", wrong)

        taken = settings_environment(make_settings(require_storage=True, metrics_port=busy.getsockname()[1]))
        result = cli(["run"], tmp_path, taken)
        assert result.returncode == 1, result.stderr
        assert_one_line(result.stderr, f"worker not started: cannot serve metrics on port {busy.getsockname()[1]} "
                                       "(METRICS_PORT)", wrong)
    finally:
        busy.close()
        guarded.kill()


def assert_one_line(stderr: str, starting: str, secret: str) -> None:
    """The failure is the one line that is not a JSON log line, and nothing shows ``secret``."""
    assert secret not in stderr and "Traceback" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(starting), (line, starting)
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [entry["msg"] for entry in logged] in ([], ["worker starting"]), logged
