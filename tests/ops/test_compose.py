"""docker-compose.yml as Docker Compose resolves it: services, images, ports, volumes, health,
GPU and shared memory, checked against the code they run (export configs, worker settings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from client_worker.config import Settings
from export.repository import FLAVOURS, all_configs
from img2mesh.contract import ENSEMBLE, Shapes
from img2mesh.telemetry import TELEMETRY_OFF
from tests.ops.conftest import COMPOSE_FILE, CPU_OVERRIDE, ROOT, load_yaml
from tests.support.durations import seconds
from tests.support.python_backend_shm import python_backend_shm_bound

SERVICES = {"redis", "exporter", "triton", "worker"}
GIB = 1 << 30


def test_compose_files_are_plain_yaml_with_the_services() -> None:
    stack = load_yaml(COMPOSE_FILE)
    assert set(stack["services"]) == SERVICES
    assert set(load_yaml(CPU_OVERRIDE)["services"]) <= SERVICES


def test_every_image_is_built_from_a_dockerfile_of_the_repository(gpu_stack: dict) -> None:
    for name in ("exporter", "triton", "worker"):
        service = gpu_stack["services"][name]
        context = Path(service["build"]["context"])
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).is_file()
        assert service["image"].startswith(f"photo-to-3d/{name}:")
    assert gpu_stack["services"]["redis"]["image"].startswith("redis:7")


def test_redis_persists_jobs_with_an_append_only_file(gpu_stack: dict) -> None:
    redis = gpu_stack["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"  # an answered write survives a crash
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert _mounts(redis) == {"/data": ("redis-data", False)}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_triton_serves_the_exported_repository_in_explicit_mode(gpu_stack: dict) -> None:
    triton = gpu_stack["services"]["triton"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in triton["command"][1:])
    assert triton["command"][0] == "tritonserver"
    assert flags["model-control-mode"] == "explicit"
    assert flags["load-model"] == "*"
    assert flags["exit-on-error"] == "false"
    assert _mounts(triton)[flags["model-repository"]] == ("model-repository", True)
    assert _mounts(gpu_stack["services"]["exporter"])["/models"] == ("model-repository", False)
    assert triton["depends_on"]["exporter"]["condition"] == "service_completed_successfully"
    published = {int(port["target"]): port["host_ip"] for port in triton["ports"]}
    assert published == {int(flags["http-port"]): "127.0.0.1", int(flags["grpc-port"]): "127.0.0.1", int(flags["metrics-port"]): "127.0.0.1"}


def test_triton_reserves_the_gpus(gpu_stack: dict) -> None:
    devices = gpu_stack["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": -1}]


def test_triton_health_is_the_readiness_of_the_ensemble(gpu_stack: dict) -> None:
    check = gpu_stack["services"]["triton"]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert f"http://localhost:8000/v2/models/{ENSEMBLE}/ready" in " ".join(check["test"])
    assert seconds(check["start_period"]) >= 600, "the first start builds TensorRT engines"


def test_tensorrt_engine_caches_are_on_a_writable_volume(gpu_stack: dict) -> None:
    mounts = _mounts(gpu_stack["services"]["triton"])
    paths = [
        accelerator.parameters["trt_engine_cache_path"]
        for config in all_configs("gpu", Shapes()).values()
        for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator
        if "trt_engine_cache_path" in accelerator.parameters
    ]
    assert paths, "the gpu flavour uses TensorRT with an engine cache"
    for path in paths:
        volume = [target for target, (_, read_only) in mounts.items() if path.startswith(target + "/") and not read_only]
        assert volume, f"{path} is not on a writable volume of the triton service"


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_shared_memory_holds_twice_the_peak_of_every_python_instance(gpu_stack: dict, flavour: str) -> None:
    bound = python_backend_shm_bound(flavour)
    shm = int(gpu_stack["services"]["triton"]["shm_size"])
    print(f"{flavour}: /dev/shm bound {bound / GIB:.2f} GiB, shm_size {shm / GIB:.2f} GiB")
    assert shm >= 2 * bound


def test_the_worker_scales_and_is_healthy_only_while_it_heartbeats(gpu_stack: dict) -> None:
    worker = gpu_stack["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"]["triton"]["condition"] == "service_healthy"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    check = worker["healthcheck"]["test"]
    assert check[:4] == ["CMD", "python", "-m", "client_worker"]
    help_text = subprocess.run(
        [sys.executable, "-m", "client_worker", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert check[4] in help_text
    assert worker["environment"]["TRITON_URL"] == "triton:8001"
    assert worker["environment"]["REDIS_URL"].startswith("redis://redis:6379")
    assert seconds(worker["stop_grace_period"]) > Settings.default("shutdown_grace_s")


def test_every_service_built_here_runs_with_telemetry_off(gpu_stack: dict, cpu_stack: dict) -> None:
    """Also where an operator swaps an image for one that lacks our ENV lines."""
    for stack in (gpu_stack, cpu_stack):
        built = {name: service for name, service in stack["services"].items() if "build" in service}
        assert set(built) == {"exporter", "triton", "worker"}
        for name, service in built.items():
            assert TELEMETRY_OFF.items() <= service["environment"].items(), name


def test_worker_variables_are_settings_of_the_worker(gpu_stack: dict) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    environment = set(gpu_stack["services"]["worker"]["environment"]) - set(TELEMETRY_OFF)
    assert environment <= fields, environment - fields
    example = {match for match in re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)}
    assert example <= fields, f".env.example names variables the worker does not read: {example - fields}"
    assert "TRITON_URL" in example and "REDIS_URL" in example


def test_compose_variables_are_documented_in_compose_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)[:}-]", COMPOSE_FILE.read_text() + CPU_OVERRIDE.read_text()))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / "compose.env.example").read_text(), re.M))
    assert used == documented


def test_the_exporter_runs_once_with_a_download_cache(gpu_stack: dict) -> None:
    exporter = gpu_stack["services"]["exporter"]
    assert exporter["restart"] == "no"
    assert _mounts(exporter) == {"/models": ("model-repository", False), "/cache": ("download-cache", False)}
    script = exporter["command"][2]
    assert "if [ -f /models/.export-complete ]" in script
    build = script[script.index("python -m export build") : script.index("&&")].replace("\\\n", " ").split()
    options = [word for word in build if word.startswith("--")]
    assert options == ["--checkpoint", "--u2net", "--flavour", "--output"]
    help_text = subprocess.run(
        [sys.executable, "-m", "export", "build", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    for option in options:
        assert option in help_text, f"python -m export build has no {option}"
    assert exporter["environment"]["EXPORT_FLAVOUR"] in FLAVOURS


def test_cpu_override_drops_the_gpu_and_exports_the_cpu_flavour(cpu_stack: dict) -> None:
    triton = cpu_stack["services"]["triton"]
    assert "deploy" not in triton
    assert cpu_stack["services"]["exporter"]["environment"]["EXPORT_FLAVOUR"] == "cpu"
    assert _mounts(triton)["/models"] == ("model-repository-cpu", True)
    assert _mounts(cpu_stack["services"]["exporter"])["/models"] == ("model-repository-cpu", False)


def _mounts(service: dict) -> dict[str, tuple[str, bool]]:
    return {mount["target"]: (mount["source"], bool(mount.get("read_only"))) for mount in service.get("volumes", [])}


