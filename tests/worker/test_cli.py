"""`python -m client_worker`: generate, enqueue, healthcheck, run as processes; and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from client_worker.config import Settings
from local_triton import LocalTriton
from tests.support.gltf_validator import GltfValidator
from tests.worker.conftest import E2E_RESOLUTION, WorkerThread
from tests.worker.test_resilience import REPOSITORY_ROOT, settings_environment


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPOSITORY_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "client_worker", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_generate_writes_a_valid_glb(
    triton_server: LocalTriton, product_photo: bytes, tmp_path: Path, gltf_validator: GltfValidator,
) -> None:
    photo = tmp_path / "mug.jpg"
    photo.write_bytes(product_photo)
    output = tmp_path / "out" / "mug.glb"
    result = cli(["generate", str(photo), "-o", str(output), "--preset", "fast",
                  "--triton-url", triton_server.grpc_url], tmp_path, {"MAX_RESOLUTION": str(E2E_RESOLUTION)})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["preset"] == "fast" and summary["weights_version"] == "1"
    report = gltf_validator.assert_valid(output.read_bytes())
    assert summary["faces"] == report["info"]["totalTriangleCount"] > 0


def test_generate_explains_a_bad_image(triton_server: LocalTriton, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = cli(["generate", str(text), "-o", str(tmp_path / "x.glb"), "--triton-url", triton_server.grpc_url],
                 tmp_path)
    assert result.returncode == 1
    assert "the model refused the image" in result.stderr and "JPEG, PNG or WebP" in result.stderr
    assert not (tmp_path / "x.glb").exists()


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
        "import sys, client_worker.__main__, client_worker.worker, client_worker.processing;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
