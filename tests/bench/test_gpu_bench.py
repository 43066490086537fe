"""bench/gpu.py is ready for a GPU host: its whole code path runs here on the CPU (tiny weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_and_reports_band_against_dense(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--size", "tiny", "--device", "cpu", "--resolution", "48",
         "--dtypes", "fp32,bf16", "--rounds", "1", "--cache", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    fp32, bf16 = report["precisions"]["fp32"], report["precisions"]["bf16"]
    assert fp32["faces"] == report["faces_dense"] > 0
    assert fp32["chamfer_vs_fp32_dense"] < 1e-6
    assert fp32["points"] < report["dense_points"]
    assert bf16["faces"] > 0 and bf16["chamfer_vs_fp32_dense"] < 0.005
    assert "| bf16 |" in result.stdout
