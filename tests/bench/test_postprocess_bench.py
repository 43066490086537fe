"""bench/postprocess.py times every host step of a job at a preset and reports them as a table and JSON,
and measures what the mesher's BLS calls add to the decoder's compute through a real tritonserver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.postprocess import MESHER_STEPS, WRITER_STEPS

ROOT = Path(__file__).resolve().parents[2]


def test_the_postprocessing_benchmark_reports_each_step_and_the_bls_overhead(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.postprocess", "--presets", "fast", "--rounds", "1", "--triton",
         "--cache", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    fast = report["presets"]["fast"]
    assert set(fast["steps"]) == {*MESHER_STEPS, *WRITER_STEPS}
    assert fast["mesher_cpu_ms"] > 0 and fast["writers_cpu_ms"] > 0
    assert all(step["cpu_ms"] >= 0 and step["wall_ms"] >= 0 for step in fast["steps"].values())
    assert fast["surface_faces"] > fast["faces"] > 0.9 * 20_000
    assert fast["bytes"]["glb"] > 0 and fast["bytes"]["usdz"] > 0
    assert "| mesher | **total** |" in result.stdout
    bls = report["bls"]["fast"]
    assert bls["calls"] >= 3  # band levels, texels, vertices
    assert 0 < bls["decoder_compute_ms"] < bls["in_calls_ms"]
    assert bls["bls_overhead_ms"] == pytest.approx(bls["in_calls_ms"] - bls["decoder_compute_ms"], abs=0.2)
