"""bench/engines.py runs on tiny weights and its parity figures hold: every fp32 engine matches eager."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.engines import PARITY_LIMIT

ROOT = Path(__file__).resolve().parents[2]
FP32_ENGINES = {"torch", "onnxruntime", "onnxruntime tuned", "openvino f32"}


def test_the_engine_benchmark_times_every_engine_at_fp32_parity(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.engines", "--size", "tiny", "--rounds", "1", "--cache", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for network in ("encoder", "decoder"):
        rows = report[network]
        assert FP32_ENGINES | {"openvino bf16 (opt-in)"} == set(rows)
        assert all(rows[name]["max_rel"] <= PARITY_LIMIT for name in FP32_ENGINES), rows
        assert rows["torch"]["speedup"] == 1.0 and all(row["ms"] > 0 for row in rows.values())
    ceiling = report["encoder_ceiling"]
    assert ceiling["gflop"] > 0 and ceiling["gemm_gflops"] > 0
    assert ceiling["max_fp32_speedup"] == pytest.approx(ceiling["gemm_gflops"] / ceiling["torch_gflops"], rel=1e-2)
