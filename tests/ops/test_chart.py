"""The Helm chart (charts/photo-to-3d) as ``helm template`` renders it: every manifest valid for
Kubernetes and KEDA, and linked to what it runs — the worker's settings, Triton's flags and
endpoints, the compose stack it mirrors, the queue lists producers push to, the runbook's commands.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
import typing
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from client_worker.config import Settings, load_settings
from client_worker.jobs.priorities import PriorityLists
from export.repository import all_configs
from img2mesh.contract import ENSEMBLE, Shapes
from img2mesh.telemetry import TELEMETRY_OFF
from local_triton import LocalTriton
from tests.ops.conftest import (
    CHART,
    EXTERNAL_VALUES,
    NAMESPACE,
    RELEASE,
    REQUIRED_VALUES,
    ROOT,
    helm,
    render,
    template_args,
)
from tests.support.durations import seconds
from tests.support.python_backend_shm import python_backend_shm_bound

KEDA_CRD = Path(__file__).parent / "data" / "keda-v2.20.2-scaledobjects.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SECRET_SETTINGS = {
    name.upper() for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
}
GIB = 1 << 30
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": GIB, "Ti": 1 << 40}


# --- reading the rendered manifests ------------------------------------------------------------

def one(manifests: list[dict], kind: str, name: str) -> dict:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == f"{RELEASE}-{name}"]
    assert len(found) == 1, f"expected one {kind} {RELEASE}-{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str) -> dict:
    return next(c for c in pod_spec(workload)["containers"] + pod_spec(workload).get("initContainers", []) if c["name"] == name)


def triton_flags(manifests: list[dict]) -> dict[str, str]:
    command = container(one(manifests, "Deployment", "triton"), "triton")["command"]
    assert command[0] == "tritonserver"
    return dict(arg.removeprefix("--").split("=", 1) for arg in command[1:])


def named_ports(workload: dict, name: str) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container(workload, name)["ports"]}


def quantity(value: str | int) -> float:
    text = str(value)
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text.removesuffix("m")) / 1000 if text.endswith("m") else float(text)


def worker_environment(manifests: list[dict], secret: str = "secret-value") -> dict[str, str]:
    """The worker container's environment as the kubelet builds it, each secret reference
    replaced by ``secret`` and ``$(NAME)`` expanded from the variables before it."""
    environment = dict(one(manifests, "ConfigMap", "worker")["data"])
    for variable in container(one(manifests, "Deployment", "worker"), "worker")["env"]:
        value = variable.get("value", secret)
        environment[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environment[m.group(1)], value)
    return environment


def workloads(manifests: list[dict]) -> list[dict]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "Job")]


# --- schemas -----------------------------------------------------------------------------------

def minimum_kubernetes() -> str:
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=(\d+\.\d+)\.\d+(-0)?", constraint)
    assert match, f"kubeVersion {constraint!r} is not a plain lower bound"
    return match.group(1)


KUBERNETES_VERSIONS = [minimum_kubernetes(), kubernetes_validate.latest_version()]


def strict(schema: object) -> object:
    """KEDA's structural schema with unknown fields refused, as kubectl's default strict field
    validation refuses them on apply (a CRD schema alone would silently prune them)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


def keda_validator() -> jsonschema.Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def schema_errors(manifest: dict, version: str) -> list[str]:
    if manifest["apiVersion"] == "keda.sh/v1alpha1":
        return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in keda_validator().iter_errors(manifest)]
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


# --- every manifest is valid -------------------------------------------------------------------

def test_helm_lints_the_chart_strictly() -> None:
    sets = [arg for key, value in REQUIRED_VALUES.items() for arg in ("--set", f"{key}={value}")]
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *sets)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", ["chart", "external_chart"])
def test_every_manifest_matches_the_kubernetes_and_keda_schemas(variant: str, version: str, request: pytest.FixtureRequest) -> None:
    manifests = request.getfixturevalue(variant)
    problems = [f"{m['kind']} {m['metadata']['name']}: {error}" for m in manifests for error in schema_errors(m, version)]
    assert not problems, "\n".join(problems)


def test_the_default_chart_renders_the_whole_stack(chart: list[dict]) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in chart)
    assert kinds == sorted([
        ("ConfigMap", f"{RELEASE}-worker"), ("Deployment", f"{RELEASE}-triton"), ("Deployment", f"{RELEASE}-worker"),
        ("Job", f"{RELEASE}-export-gpu-v1"), ("PersistentVolumeClaim", f"{RELEASE}-model-repository"),
        ("PodDisruptionBudget", f"{RELEASE}-triton"), ("ScaledObject", f"{RELEASE}-triton"),
        ("ScaledObject", f"{RELEASE}-worker"), ("Service", f"{RELEASE}-redis"), ("Service", f"{RELEASE}-triton"),
        ("StatefulSet", f"{RELEASE}-redis"),
    ])


def test_every_container_of_ours_runs_with_telemetry_off(chart: list[dict], external_chart: list[dict]) -> None:
    for manifests in (chart, external_chart):
        ours = [(workload["metadata"]["name"], c) for workload in workloads(manifests)
                for c in pod_spec(workload)["containers"] if "photo-to-3d/" in c["image"]]
        assert {name for name, _ in ours} >= {f"{RELEASE}-triton", f"{RELEASE}-worker"}
        for name, spec in ours:
            environment = {variable["name"]: variable.get("value") for variable in spec["env"]}
            assert TELEMETRY_OFF.items() <= environment.items(), name


def test_the_validators_reject_broken_manifests(chart: list[dict]) -> None:
    """The checks above can fail: a misspelt field, a wrong type, an unknown KEDA field."""
    version = KUBERNETES_VERSIONS[0]
    triton = copy.deepcopy(one(chart, "Deployment", "triton"))
    container(triton, "triton")["resource"] = container(triton, "triton").pop("resources")
    assert schema_errors(triton, version)
    service = copy.deepcopy(one(chart, "Service", "triton"))
    service["spec"]["ports"][0]["port"] = "8001"
    assert schema_errors(service, version)
    scaled = copy.deepcopy(one(chart, "ScaledObject", "worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 4  # KEDA's metadata values are strings
    assert schema_errors(scaled, version)
    scaled = copy.deepcopy(one(chart, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicas"] = 8  # the field is maxReplicaCount
    assert schema_errors(scaled, version)


@pytest.mark.parametrize(
    ("values", "keda", "message"),
    [
        ({}, True, "autoscaling.triton.prometheusAddress is required"),
        (REQUIRED_VALUES, False, "autoscaling needs KEDA's ScaledObject"),
        ({**REQUIRED_VALUES, "redis.enabled": "false"}, True, "redis.external.host is required"),
        ({**REQUIRED_VALUES, "worker.env.WEBHOOK_SECRET": "inline"}, True, "worker.env.WEBHOOK_SECRET is set by the chart"),
        ({**REQUIRED_VALUES, "worker.env.TRITON_URL": "triton:8001"}, True, "worker.env.TRITON_URL is set by the chart"),
    ],
)
def test_the_chart_refuses_values_it_cannot_honour(values: dict[str, str], keda: bool, message: str) -> None:
    result = helm(*template_args(values, keda=keda))
    assert result.returncode != 0 and message in result.stderr, result.stderr


# --- Triton --------------------------------------------------------------------------------------

def test_triton_runs_the_compose_flags_on_one_exported_version(chart: list[dict], gpu_stack: dict) -> None:
    flags = triton_flags(chart)
    compose = dict(arg.removeprefix("--").split("=", 1) for arg in gpu_stack["services"]["triton"]["command"][1:])
    assert flags.pop("model-repository") == "/models/gpu/v1"
    compose.pop("model-repository")
    # The connection age makes workers re-resolve the headless Service (new pods join); the grace
    # lets a closing connection finish the worker's longest request.
    assert int(flags.pop("grpc-max-connection-age")) == 1000 * VALUES["triton"]["grpcMaxConnectionAgeSeconds"]
    grace_ms = int(flags.pop("grpc-max-connection-age-grace"))
    assert grace_ms > 1000 * float(worker_environment(chart)["TRITON_TIMEOUT_S"])
    assert flags == compose


def test_triton_ports_probes_and_metrics_follow_its_flags(chart: list[dict], gpu_stack: dict) -> None:
    triton = one(chart, "Deployment", "triton")
    flags = triton_flags(chart)
    ports = named_ports(triton, "triton")
    assert ports == {"http": int(flags["http-port"]), "grpc": int(flags["grpc-port"]), "metrics": int(flags["metrics-port"])}
    annotations = triton["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == int(flags["metrics-port"])
    assert flags["allow-metrics"] == "true"
    probes = {kind: container(triton, "triton")[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
    assert {probe["port"] for probe in probes.values()} == {"http"}
    assert probes["readiness"]["path"] == f"/v2/models/{ENSEMBLE}/ready"
    assert probes["startup"]["path"] == probes["liveness"]["path"] == "/v2/health/ready"
    # compose's health check is the same readiness, on the same port.
    compose_check = " ".join(gpu_stack["services"]["triton"]["healthcheck"]["test"])
    assert f"localhost:{flags['http-port']}{probes['readiness']['path']}" in compose_check
    service = one(chart, "Service", "triton")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        name: (number, name) for name, number in ports.items()
    }


def test_the_probe_endpoints_answer_on_a_real_triton(chart: list[dict], triton_server: LocalTriton) -> None:
    """The paths the kubelet polls, on a tritonserver serving an exported repository."""
    triton = container(one(chart, "Deployment", "triton"), "triton")
    for kind in ("startup", "readiness", "liveness"):
        path = triton[f"{kind}Probe"]["httpGet"]["path"]
        with urllib.request.urlopen(triton_server.http_url + path, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200, f"{kind} probe {path}"


def test_triton_gets_its_gpu_and_the_shared_memory_the_runbook_computes(chart: list[dict], gpu_stack: dict) -> None:
    triton = one(chart, "Deployment", "triton")
    resources = container(triton, "triton")["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == VALUES["triton"]["gpus"] >= 1
    volumes = {volume["name"]: volume for volume in pod_spec(triton)["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container(triton, "triton")["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    bound = python_backend_shm_bound("gpu")
    assert quantity(shm["sizeLimit"]) >= 2 * bound, f"/dev/shm {shm['sizeLimit']} < 2 × {bound / GIB:.2f} GiB"
    assert quantity(shm["sizeLimit"]) == int(gpu_stack["services"]["triton"]["shm_size"])
    # tmpfs pages count against the container's memory limit.
    assert quantity(resources["limits"]["memory"]) >= quantity(resources["requests"]["memory"]) + quantity(shm["sizeLimit"])
    # TensorRT writes its engines where the gpu configs say, on a writable volume.
    paths = [
        accelerator.parameters["trt_engine_cache_path"]
        for config in all_configs("gpu", Shapes()).values()
        for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator
        if "trt_engine_cache_path" in accelerator.parameters
    ]
    assert paths
    for path in paths:
        assert any(path.startswith(target + "/") and not mount.get("readOnly") for target, mount in mounts.items()), path
    startup = container(triton, "triton")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= seconds(gpu_stack["services"]["triton"]["healthcheck"]["start_period"])


def test_the_cpu_flavour_asks_for_no_gpu(external_chart: list[dict]) -> None:
    triton = one(external_chart, "Deployment", "triton")
    assert "nvidia.com/gpu" not in container(triton, "triton")["resources"]["limits"]
    assert triton_flags(external_chart)["model-repository"] == "/models/cpu/v1"
    job = one(external_chart, "Job", "export-cpu-v1")
    assert {v["name"]: v.get("value") for v in container(job, "exporter")["env"]}["EXPORT_FLAVOUR"] == "cpu"
    assert pod_spec(job)["volumes"][0]["persistentVolumeClaim"]["claimName"] == EXTERNAL_VALUES["modelRepository.existingClaim"]
    assert not [m for m in external_chart if m["kind"] == "PersistentVolumeClaim"]


def test_every_container_has_requests_and_a_memory_limit(chart: list[dict], external_chart: list[dict]) -> None:
    for workload in workloads(chart) + workloads(external_chart):
        spec = pod_spec(workload)
        for item in spec["containers"] + spec.get("initContainers", []):
            resources = item.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{workload['metadata']['name']}/{item['name']}"
            assert "memory" in resources.get("limits", {}), f"{workload['metadata']['name']}/{item['name']}"
            if item["name"] != "triton":
                assert "nvidia.com/gpu" not in resources.get("limits", {}), item["name"]


# --- model versions: one exported repository per version, pods roll one by one ---------------------

def test_each_pod_waits_for_the_export_of_the_version_it_serves(chart: list[dict]) -> None:
    repository = triton_flags(chart)["model-repository"]
    wait = " ".join(container(one(chart, "Deployment", "triton"), "wait-for-export")["command"])
    assert f"[ -f {repository}/.export-complete ]" in wait
    job = one(chart, "Job", "export-gpu-v1")
    exporter = container(job, "exporter")
    assert exporter["command"] == ["sh", "-c"]  # replaces the image's `python -m` entrypoint
    script = exporter["args"][0]
    environment = {variable["name"]: variable.get("value") for variable in exporter["env"]}
    assert f"target={repository}\n" in script
    build = next(line for line in script.splitlines() if "python -m export build" in line)
    words = shlex.split(build.replace('"$target"', repository))
    options = dict(zip(words[4::2], words[5::2], strict=True))
    assert options["--output"] == repository and options["--version"] == "$TRIPOSR_VERSION"
    assert environment["TRIPOSR_VERSION"] == str(VALUES["model"]["version"]) and environment["EXPORT_FLAVOUR"] == "gpu"
    help_text = subprocess.run(
        [sys.executable, "-m", "export", "build", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert all(option in help_text for option in options), options
    assert script.index("python -m export build") < script.index('touch "$target/.export-complete"')
    # Triton reads the exporter's volume, read-only, at the path the Job wrote.
    mounts = {m["mountPath"]: m for m in container(one(chart, "Deployment", "triton"), "triton")["volumeMounts"]}
    exporter_mounts = {m["mountPath"]: m for m in exporter["volumeMounts"]}
    assert mounts["/models"]["subPath"] == exporter_mounts["/models"]["subPath"] and mounts["/models"]["readOnly"]


def test_a_new_version_rolls_triton_one_pod_at_a_time_and_leaves_the_workers(chart: list[dict]) -> None:
    rolled = render({**REQUIRED_VALUES, "model.version": "2"})
    assert triton_flags(rolled)["model-repository"] == "/models/gpu/v2"
    assert one(rolled, "Job", "export-gpu-v2")
    old, new = one(chart, "Deployment", "triton"), one(rolled, "Deployment", "triton")
    assert old["spec"]["template"] != new["spec"]["template"], "Kubernetes rolls pods only when their template changes"
    assert old["spec"]["selector"] == new["spec"]["selector"]
    assert new["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert one(chart, "Deployment", "worker") == one(rolled, "Deployment", "worker")


def test_replicas_are_keda_s_or_the_values_never_both(chart: list[dict]) -> None:
    """With autoscaling the Deployments name no count (an upgrade would reset KEDA's); without
    it, the values' counts, and no KEDA object is needed."""
    for name in ("triton", "worker"):
        assert "replicas" not in one(chart, "Deployment", name)["spec"]
    fixed = render({**EXTERNAL_VALUES, "autoscaling.workers.enabled": "false"}, keda=False)
    assert not [m for m in fixed if m["kind"] == "ScaledObject"]
    for name in ("triton", "worker"):
        assert one(fixed, "Deployment", name)["spec"]["replicas"] == VALUES[name]["replicas"]


def test_disruptions_take_one_triton_pod_at_a_time(chart: list[dict]) -> None:
    budget = one(chart, "PodDisruptionBudget", "triton")
    triton = one(chart, "Deployment", "triton")
    assert budget["spec"]["selector"] == triton["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1 < one(chart, "ScaledObject", "triton")["spec"]["minReplicaCount"]


# --- the gRPC path from workers to Triton ----------------------------------------------------------

def test_workers_reach_every_ready_triton_pod_through_the_headless_service(chart: list[dict]) -> None:
    service = one(chart, "Service", "triton")
    triton = one(chart, "Deployment", "triton")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is False
    assert service["spec"]["selector"] == triton["spec"]["template"]["metadata"]["labels"]
    target = worker_environment(chart)["TRITON_URL"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert target == f"dns:///{RELEASE}-triton.{NAMESPACE}.svc.{VALUES['clusterDomain']}:{grpc_port}"


# --- the worker ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["chart", "external_chart"])
def test_the_worker_environment_is_settings_the_worker_accepts(
    variant: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifests = request.getfixturevalue(variant)
    environment = worker_environment(manifests)
    fields = {name.upper() for name in Settings.model_fields}
    declared = [v["name"] for v in container(one(manifests, "Deployment", "worker"), "worker")["env"]]
    helpers = set(environment) - fields - set(TELEMETRY_OFF)
    # A name that is no setting may only exist to be spliced into a setting ($(NAME)), or switch telemetry off.
    for name in helpers:
        assert any(f"$({name})" in v.get("value", "") for v in container(one(manifests, "Deployment", "worker"), "worker")["env"]), name
        assert declared.index(name) < declared.index("REDIS_URL")
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(require_storage=True)
    redis = urlsplit(settings.redis_url)
    trigger = one(manifests, "ScaledObject", "worker")["spec"]["triggers"][0]["metadata"]
    # The scaler watches the Redis the workers use.
    assert trigger["address"] == f"{redis.hostname}:{redis.port}"
    assert trigger["databaseIndex"] == redis.path.strip("/")
    assert trigger["enableTLS"] == str(redis.scheme == "rediss").lower()
    if variant == "chart":
        assert redis.hostname == f"{RELEASE}-redis.{NAMESPACE}.svc.{VALUES['clusterDomain']}"
        service = one(manifests, "Service", "redis")
        assert redis.port == service["spec"]["ports"][0]["port"]
    else:
        assert (redis.scheme, redis.hostname, redis.port, redis.username, redis.password) == (
            "rediss", EXTERNAL_VALUES["redis.external.host"], int(EXTERNAL_VALUES["redis.external.port"]),
            EXTERNAL_VALUES["redis.external.username"], "secret-value",
        )
        assert trigger["username"] == redis.username and trigger["passwordFromEnv"] in helpers


@pytest.mark.parametrize("variant", ["chart", "external_chart"])
def test_secrets_are_referenced_never_inlined(variant: str, request: pytest.FixtureRequest) -> None:
    manifests = request.getfixturevalue(variant)
    assert not [m for m in manifests if m["kind"] == "Secret"]
    config = one(manifests, "ConfigMap", "worker")["data"]
    assert not SECRET_SETTINGS & set(config)
    references = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for workload in workloads(manifests) for item in pod_spec(workload)["containers"]
        for v in item.get("env", []) if "valueFrom" in v
    }
    assert SECRET_SETTINGS <= set(references)
    assert {ref["name"] for ref in references.values()} == {VALUES["secretName"]}
    for workload in workloads(manifests):
        for item in pod_spec(workload)["containers"]:
            for v in item.get("env", []):
                assert v["name"] not in SECRET_SETTINGS | {"REDIS_PASSWORD", "HF_TOKEN"} or "value" not in v, v


def test_the_worker_is_live_while_it_heartbeats_and_stops_gracefully(chart: list[dict], gpu_stack: dict) -> None:
    worker = one(chart, "Deployment", "worker")
    settings = Settings(**{k.lower(): v for k, v in worker_environment(chart).items() if k.lower() in Settings.model_fields})
    spec = container(worker, "worker")
    compose_check = gpu_stack["services"]["worker"]["healthcheck"]["test"][1:]
    assert spec["livenessProbe"]["exec"]["command"] == spec["startupProbe"]["exec"]["command"] == compose_check
    help_text = subprocess.run(
        [sys.executable, "-m", "client_worker", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert compose_check[-1] in help_text
    # It heartbeats only once Triton's pipeline was ready: start-up may last the whole wait.
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > settings.triton_ready_timeout_s
    # SIGTERM → running jobs get SHUTDOWN_GRACE_S, then hand-back and the webhook drain.
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_grace_s + settings.webhook_timeout_s
    assert int(named_ports(worker, "worker")["metrics"]) == settings.metrics_port
    assert int(worker["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]) == settings.metrics_port


def test_the_worker_can_be_made_unready_by_stranded_messages_but_never_restarted_for_them(chart: list[dict]) -> None:
    assert "readinessProbe" not in container(one(chart, "Deployment", "worker"), "worker")  # opt-in
    opted = container(one(render({**REQUIRED_VALUES, "worker.readyOnlyWithoutStrandedMessages": "true"}),
                          "Deployment", "worker"), "worker")
    assert opted["readinessProbe"]["exec"]["command"] == ["python", "-m", "client_worker", "healthcheck",
                                                          "--fail-on-stranded"]
    assert "--fail-on-stranded" not in opted["livenessProbe"]["exec"]["command"]
    help_text = subprocess.run([sys.executable, "-m", "client_worker", "healthcheck", "--help"],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "--fail-on-stranded" in help_text


# --- autoscaling ---------------------------------------------------------------------------------

def test_workers_scale_on_every_list_producers_push_to(chart: list[dict]) -> None:
    scaled = one(chart, "ScaledObject", "worker")["spec"]
    environment = worker_environment(chart)
    settings = Settings(queue_name=environment["QUEUE_NAME"], priority_steps=environment["PRIORITY_STEPS"])
    lists = PriorityLists.from_settings(settings).of(settings.queue_name)
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis"}
    assert [t["metadata"]["listName"] for t in triggers] == lists
    assert scaled["scaleTargetRef"]["name"] == one(chart, "Deployment", "worker")["metadata"]["name"]
    # The waiting jobs of all lists together, per replica.
    modifiers = scaled["advanced"]["scalingModifiers"]
    assert sorted(modifiers["formula"].split(" + ")) == sorted(t["name"] for t in triggers)
    assert modifiers["metricType"] == "AverageValue"
    assert int(modifiers["target"]) == VALUES["autoscaling"]["workers"]["jobsPerReplica"]
    # At full scale the workers keep the runbook's 2 × 4 requests in flight per Triton GPU.
    triton = one(chart, "ScaledObject", "triton")["spec"]
    slots = scaled["maxReplicaCount"] * int(worker_environment(chart)["CONCURRENCY"])
    assert slots == 2 * 4 * triton["maxReplicaCount"] * VALUES["triton"]["gpus"]


def test_triton_scales_on_the_queue_time_of_its_own_metrics(chart: list[dict]) -> None:
    scaled = one(chart, "ScaledObject", "triton")["spec"]
    assert scaled["scaleTargetRef"]["name"] == one(chart, "Deployment", "triton")["metadata"]["name"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    query = trigger["metadata"]["query"]
    metrics = set(re.findall(r"\b(nv_\w+)\{", query))
    runbook_metrics = set(re.findall(r"`(nv_\w+)", section(RUNBOOK.read_text(), "## Metrics")))
    assert metrics == {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= runbook_metrics
    assert set(re.findall(r'model!?="(\w+)"', query)) == {ENSEMBLE}
    assert float(trigger["metadata"]["threshold"]) == VALUES["autoscaling"]["triton"]["queueMsPerJob"]
    assert trigger["metadata"]["serverAddress"] == REQUIRED_VALUES["autoscaling.triton.prometheusAddress"]


# --- Redis -----------------------------------------------------------------------------------------

def test_the_charts_redis_is_composes_with_its_append_only_file_on_a_volume(chart: list[dict], gpu_stack: dict) -> None:
    redis = one(chart, "StatefulSet", "redis")
    compose = gpu_stack["services"]["redis"]
    spec = container(redis, "redis")
    assert spec["image"] == compose["image"] == VALUES["images"]["redis"]
    assert spec["command"] == compose["command"]
    assert spec["readinessProbe"]["exec"]["command"] == compose["healthcheck"]["test"][1:]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {m["mountPath"]: m["name"] for m in spec["volumeMounts"]} == {"/data": claim["metadata"]["name"]}


def test_an_external_redis_replaces_the_charts(external_chart: list[dict]) -> None:
    assert not [m for m in external_chart if m["kind"] == "StatefulSet" or m["metadata"]["name"] == f"{RELEASE}-redis"]


# --- the runbook's commands ----------------------------------------------------------------------

def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def runbook_helm_steps() -> list[list[str]]:
    """The `helm upgrade` lines of the runbook's Kubernetes block, as argv."""
    text = RUNBOOK.read_text()
    marker = text.index("<!-- tests/ops/test_chart.py renders the helm commands of the next block")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert block, "the runbook lost its Kubernetes commands"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [shlex.split(line.split(" #")[0]) for line in lines if line.startswith("helm upgrade")]


def test_the_runbooks_roll_and_rollback_render_as_described() -> None:
    """Each `helm upgrade` of the runbook, with --reuse-values as Helm applies it, in order: v1,
    roll to v2, pin the workers once rolled, unpin, roll back to v1."""
    values: dict[str, str] = {}
    steps = []
    for argv in runbook_helm_steps():
        assert argv[:2] == ["helm", "upgrade"]
        words = [w for w in argv[2:] if w != "--install"]
        assert words[:2] == [RELEASE, str(CHART.relative_to(ROOT))] and words[2:4] == ["-n", NAMESPACE], argv
        if "--reuse-values" not in words:
            values = {}
        sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
        values.update(dict(item.split("=", 1) for item in sets))
        manifests = render(values)
        problems = [error for m in manifests for error in schema_errors(m, KUBERNETES_VERSIONS[-1])]
        assert not problems, problems
        steps.append((triton_flags(manifests)["model-repository"], worker_environment(manifests).get("TRITON_WEIGHTS_VERSION", "")))
    assert steps == [
        ("/models/gpu/v1", ""), ("/models/gpu/v2", ""), ("/models/gpu/v2", "2"), ("/models/gpu/v2", ""), ("/models/gpu/v1", ""),
    ], steps
