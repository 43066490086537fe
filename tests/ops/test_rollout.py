"""Rolling TripoSR versions on a live tritonserver while jobs run, with the runbook's own commands.

Version 1 serves (explicit model control, as in production); version 2 is exported into the served
repository with a different analytic radius, so a job's mesh shows which weights made it, not only
the number it reports. Then: roll to 2, roll back to 1, roll to 2 again, and try a corrupt version
3 — under a steady stream of jobs, none of which may fail.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export.u2net_synthetic import synthetic_product_photo
from img2mesh.contract import (
    DECODER,
    ENCODER,
    ENSEMBLE,
    IMAGE,
    MESH_INFO,
    VERTICES,
    WEIGHTS_VERSION,
)
from local_triton import LocalTriton
from tests.ops.conftest import ROOT
from tests.support.triton import ANALYTIC_COLOR, ANALYTIC_RADIUS, GeneratedWeights
from triposr.synthetic import write_checkpoint

RUNBOOK = ROOT / "docs" / "runbook.md"
COMPOSE_PREFIX = "docker compose run --rm exporter "
VERSION_2_RADIUS = 0.35
JOB_RESOLUTION = 32


def runbook_commands() -> list[list[str]]:
    """The command lines of the runbook's version block (the one tests/ops runs), as argv."""
    text = RUNBOOK.read_text()
    marker = text.index("<!-- tests/ops/test_rollout.py runs the commands of the next block")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert block, "the runbook lost its version commands"
    commands = []
    for line in block.group(1).strip().splitlines():
        assert line.startswith(COMPOSE_PREFIX), f"runbook command not run in the exporter container: {line}"
        commands.append(shlex.split(line.removeprefix(COMPOSE_PREFIX)))
    return commands


def replace_option(argv: list[str], option: str, value: str) -> list[str]:
    index = argv.index(option)
    return [*argv[: index + 1], value, *argv[index + 2 :]]


@dataclass
class Job:
    started: float
    finished: float
    encoder_version: int | None = None
    decoder_version: int | None = None
    radius: float | None = None
    error: str | None = None


class JobStream:
    """Threads sending image → mesh requests back to back, as workers do, recording every job."""

    def __init__(self, url: str, image: bytes, threads: int = 2) -> None:
        self.url, self.image = url, image
        self.jobs: list[Job] = []
        self._finished = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> JobStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                job = self._one(client, started)
            except Exception as error:  # noqa: BLE001 - every failure is recorded and asserted on
                job = Job(started, time.monotonic(), error=str(error))
            with self._finished:
                self.jobs.append(job)
                self._finished.notify_all()

    def wait_for_a_job_since(self, moment: float, timeout_s: float = 300) -> None:
        """Block until a job that started at ``moment`` or later has finished."""
        with self._finished:
            if not self._finished.wait_for(lambda: any(job.started >= moment for job in self.jobs), timeout_s):
                raise AssertionError(f"no job finished within {timeout_s:g} s")

    def _one(self, client: grpcclient.InferenceServerClient, started: float) -> Job:
        image = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[self.image]], dtype=np.object_))
        outputs = [grpcclient.InferRequestedOutput(name) for name in (VERTICES, MESH_INFO, WEIGHTS_VERSION)]
        result = client.infer(ENSEMBLE, [image], outputs=outputs, parameters={"resolution": JOB_RESOLUTION}, client_timeout=60)
        vertices = result.as_numpy(VERTICES)[0]
        info = json.loads(result.as_numpy(MESH_INFO).reshape(-1)[0])
        return Job(
            started,
            time.monotonic(),
            encoder_version=int(result.as_numpy(WEIGHTS_VERSION).reshape(-1)[0]),
            decoder_version=int(info["decoder_version"]),
            radius=float(np.linalg.norm(vertices - vertices.mean(axis=0), axis=1).mean()),
        )

    def between(self, start: float, end: float) -> list[Job]:
        return [job for job in list(self.jobs) if job.started >= start and job.finished <= end]


@pytest.fixture
def served_repository(test_weights: GeneratedWeights, analytic_repository: Path, start_triton: Callable[..., LocalTriton]) -> Iterator[LocalTriton]:
    """Version 1 of the analytic repository, served in explicit mode with --load-model=*."""
    yield start_triton(analytic_repository, model_control="explicit", load_models=("*",))


@pytest.fixture
def product_image() -> bytes:
    buffer = io.BytesIO()
    synthetic_product_photo().save(buffer, "PNG")
    return buffer.getvalue()


def run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)  # noqa: S603


def test_runbook_rolls_versions_under_load_and_survives_a_broken_version(
    served_repository: LocalTriton, product_image: bytes, tmp_path: Path
) -> None:
    server = served_repository
    export, status, roll, rollback = runbook_commands()
    assert export[:4] == ["python", "-m", "export", "build"]

    def local(argv: list[str]) -> list[str]:
        assert argv[:2] == ["python", "-m"]
        return [arg.replace("triton:8001", server.grpc_url) for arg in argv[1:]]

    # Version 2: other weights, exported into the repository that is being served.
    checkpoint = write_checkpoint(tmp_path / "v2", size="tiny", kind="analytic", radius=VERSION_2_RADIUS, color=ANALYTIC_COLOR)
    build = local(export)
    for option, value in (("--checkpoint", str(checkpoint)), ("--flavour", "portable"), ("--output", str(server.repository))):
        build = replace_option(build, option, value)
    exported = run(build)
    assert exported.returncode == 0, exported.stderr
    assert (server.repository / ENCODER / "2").is_dir()

    shown = run(local(status))
    assert shown.returncode == 0, shown.stderr
    assert "triposr_encoder: serving 1" in shown.stdout and "image_to_mesh: ready" in shown.stdout

    with JobStream(server.grpc_url, product_image) as stream:
        steps: list[tuple[str, float, float, subprocess.CompletedProcess[str]]] = []

        def step(name: str, argv: list[str]) -> None:
            # Jobs run on the version before the step first: one whole job since the last step.
            stream.wait_for_a_job_since(steps[-1][2] if steps else 0.0)
            started = time.monotonic()
            result = run(local(argv))
            steps.append((name, started, time.monotonic(), result))
            print(f"{name}: exit {result.returncode} in {time.monotonic() - started:.1f} s\n{result.stdout}{result.stderr}")

        step("roll to 2", roll)
        step("roll back to 1", rollback)
        step("roll to 2 again", roll)
        for model in (ENCODER, DECODER):
            target = server.repository / model / "3"
            shutil.copytree(server.repository / model / "2", target)
            (target / "model.onnx").write_bytes(b"not an onnx file" * 64)
        step("roll to broken 3", replace_option(roll, "--version", "3"))
        stream.wait_for_a_job_since(steps[-1][2])
        end = time.monotonic()

    jobs = stream.jobs
    failed = [job.error for job in jobs if job.error]
    assert not failed, f"{len(failed)} of {len(jobs)} jobs failed during the rolls, first: {failed[0]}"
    assert [result.returncode for *_, result in steps] == [0, 0, 0, 1]
    broken_result = steps[3][3]
    assert "version 3" in broken_result.stderr and "Still serving version 2" in broken_result.stderr

    expected = {"roll to 2": 2, "roll back to 1": 1, "roll to 2 again": 2, "roll to broken 3": 2}
    boundaries = [start for _, start, _, _ in steps] + [end]
    for index, (name, _, finished, _) in enumerate(steps):
        after = stream.between(finished, boundaries[index + 1])
        assert after, f"no job ran after {name}"
        version = expected[name]
        radius = VERSION_2_RADIUS if version == 2 else ANALYTIC_RADIUS
        assert {(job.encoder_version, job.decoder_version) for job in after} == {(version, version)}, name
        assert all(abs(job.radius - radius) < 0.1 * radius for job in after), (name, [job.radius for job in after][:5])
    before = stream.between(0, steps[0][1])
    assert before and {(job.encoder_version, job.decoder_version) for job in before} == {(1, 1)}

    during = [job for job in jobs if any(start < job.finished and job.started < finished for _, start, finished, _ in steps)]
    mixed = [job for job in during if job.encoder_version != job.decoder_version]
    print(f"{len(jobs)} jobs, none failed; {len(during)} overlapped a roll, {len(mixed)} of them mixed encoder/decoder versions")
    assert not mixed, "the mesher must decode with the version of the encoder that made the scene codes"

    final = run(local(status))
    assert "triposr_encoder: serving 2" in final.stdout
    # The reason is the serving engine's own: ONNX Runtime's INVALID_PROTOBUF, OpenVINO's "Unable to read the model".
    unreadable = r"(INVALID_PROTOBUF|Unable to read the model)"
    assert re.search(rf"triposr_decoder: serving 2; version 3 failed to load: .*{unreadable}", final.stdout), final.stdout
    assert server.is_model_ready(ENSEMBLE)
