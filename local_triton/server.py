"""Start and stop the ``tritonserver`` binary that ships inside the ``nvidia-pytriton`` wheel.

The wheel carries Triton 2.51 (the release of the 24.10 containers) with the Python backend only.
To serve a repository with it, the backend directory must hold ``libtriton_python.so`` together
with the stub built for the *running* Python, the server needs the wheel's bundled shared
libraries on ``LD_LIBRARY_PATH``, and the stub's embedded interpreter must find this environment's
packages (it takes ``sys.path`` from the first ``python3`` on ``PATH``). This module does exactly
that, so tests, the README demo and the benchmark all start the same real server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from img2mesh.telemetry import TELEMETRY_OFF

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TritonStartError(RuntimeError):
    """The server exited or did not become ready; the message carries the tail of its log."""


def _pytriton_dir() -> Path:
    # Locate the package without importing it: only its binaries are used, and importing
    # pytriton would need its own dependencies (installed with --no-deps because of numpy<2 pins).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(
            "the local tritonserver comes from the nvidia-pytriton wheel, which is not installed: "
            "pip install --no-deps nvidia-pytriton==0.7.0"
        )
    return Path(list(spec.submodule_search_locations)[0]).resolve()


# Ports this process has handed out. The kernel may give a port that was just bound and closed to the
# next bind(0) (a CI run once got the same port for a server's HTTP and gRPC), so no port goes twice.
_handed_out: set[int] = set()


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    All the probe sockets stay bound until every port is picked, so one call never repeats a port,
    and no port this process handed out before comes back.
    """
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
    finally:
        for probe in probes:
            probe.close()
    return ports


def free_port() -> int:
    """Return one TCP port on 127.0.0.1 that nothing listens on and this process has not handed out."""
    return free_ports(1)[0]


def prepare_backend_directory(target: Path) -> Path:
    """Lay out ``target/python`` with the Python backend and the stub for this interpreter."""
    wheel = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonStartError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(wheel / "backends" / "python" / name, python_dir / name)
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return target


@dataclass
class LocalTriton:
    """One ``tritonserver`` process serving ``repository`` on loopback ports.

    ``model_control="explicit"`` with ``load_models`` (or ``("*",)``) mirrors production, where
    ops load and roll models through the repository API; ``"none"`` loads everything at start.
    """

    repository: Path
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    model_control: str = "none"
    load_models: Sequence[str] = ()
    workdir: Path | None = None
    exit_timeout_s: int = 10
    extra_args: Sequence[str] = ()
    _shm_prefix: str = field(default_factory=lambda: f"local_triton_{uuid.uuid4().hex[:12]}_", init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owned_workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).resolve()
        picked = iter(free_ports([self.grpc_port, self.http_port, self.metrics_port].count(0)))
        self.grpc_port = self.grpc_port or next(picked)
        self.http_port = self.http_port or next(picked)
        self.metrics_port = self.metrics_port or next(picked)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "the server has not been started"
        return self.workdir / "tritonserver.log"

    def command(self) -> list[str]:
        """The exact command line, so a failing start can be reproduced by hand."""
        assert self.workdir is not None
        binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
        args = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.workdir / 'backends'}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--model-control-mode={self.model_control}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            # A unique prefix lets several servers share /dev/shm (tests run more than one).
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--log-info=true",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        # The Python-backend stubs inherit it: the portable models run ONNX Runtime and OpenVINO.
        env = {**os.environ, **TELEMETRY_OFF}
        libs = _pytriton_dir().parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH", "")]))
        # The stub's embedded Python resolves its site-packages from the first python3 on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Python-backend models import img2mesh from this checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")]))
        return env

    def start(self, timeout_s: float = 180.0) -> LocalTriton:
        """Start the server and return once every selected model is ready (strict readiness)."""
        if self.workdir is None:
            self._owned_workdir = tempfile.TemporaryDirectory(prefix="local_triton_")
            self.workdir = Path(self._owned_workdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        prepare_backend_directory(self.workdir / "backends")
        log = self.log_path.open("ab")
        # Started in the checkout: the stub's Python finds img2mesh through its working directory even
        # where PYTHONPATH does not reach it and another install of the project would win (a shared
        # venv's editable install of another checkout made tests load that checkout's models).
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built above
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(), cwd=_PROJECT_ROOT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TritonStartError(f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.3)
        raise TritonStartError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def is_ready(self) -> bool:
        return self._answers_ok("/v2/health/ready")

    def is_model_ready(self, model: str, version: str = "") -> bool:
        return self._answers_ok(f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready")

    def _answers_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as response:  # noqa: S310 - loopback
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self, lines: int = 60) -> str:
        if self.workdir is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ask the server to drain and exit (SIGINT), then kill it if it overstays."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._remove_shared_memory()
        if self._owned_workdir is not None:
            self._owned_workdir.cleanup()
            self._owned_workdir = None
            self.workdir = None

    def kill(self) -> None:
        """Kill the server and its stubs at once, as a crash would (for recovery tests)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        """A killed server leaves its stubs' regions in /dev/shm; they are ours, so free them."""
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> LocalTriton:
        return self.start() if not self.running else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(server: LocalTriton, announce: Iterable[str] = ()) -> None:
    """Run ``server`` in the foreground until SIGINT/SIGTERM, for the command line."""
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with server:
        for line in announce:
            print(line, flush=True)
        print(f"ready: grpc {server.grpc_url}  http {server.http_url}  metrics {server.metrics_url}", flush=True)
        while not stop_requested and server.running:
            time.sleep(0.5)
        if not server.running and not stop_requested:
            raise TritonStartError(f"tritonserver exited unexpectedly:\n{server.log_tail()}")
