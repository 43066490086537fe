"""Nothing we run reaches a host the operator did not configure (docs/facts.md, "Telemetry").

The README's demo (exporter, local tritonserver, `client_worker generate`) and a worker process
through start-up, one job and shutdown run in a network namespace with only loopback, under strace
(tests/support/egress.py): every attempt to reach another address, and every name lookup, fails
the test with the process that made it. In the tests' own environment the telemetry switches are
already set (`import img2mesh` sets them), so they are removed from the scenario's environment:
what protects it must be the code's own doing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from img2mesh.telemetry import TELEMETRY_OFF
from tests.support.egress import run_offline
from tests.support.worker_jobs import REPOSITORY_ROOT

SCENARIO = Path(__file__).with_name("egress_scenario.py")


def test_the_demo_and_a_worker_job_reach_no_host_but_loopback(tmp_path: Path) -> None:
    missing = [tool for tool in ("unshare", "strace", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the egress test needs {', '.join(missing)} (scripts/setup.sh installs them)")
    environment = {key: value for key, value in os.environ.items() if key not in TELEMETRY_OFF}
    result, attempts = run_offline(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "scenario"),
         str(SCENARIO)],
        trace=tmp_path / "connect.trace", cwd=REPOSITORY_ROOT, env=environment, timeout_s=1200,
    )
    assert result.returncode == 0, f"the scenario failed:\n{result.stdout[-5000:]}\n{result.stderr[-2000:]}"
    assert "2 passed" in result.stdout, result.stdout[-2000:]
    assert not attempts, "reached for a host outside loopback:\n" + "\n".join(sorted({str(a) for a in attempts}))
