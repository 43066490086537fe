"""bench/quality_check.py runs end to end on the small silhouette weights (a real local Triton): good
assets without problems, every broken variant with problems, a table and a JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def test_the_quality_check_benchmark_prints_tables_and_a_json_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.quality_check", "--presets", "fast", "--photos", "boot", "one-coin",
         "--cache", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    good = {row["photo"]: row for row in report["good"]}
    assert set(good) == {"boot", "one-coin"}
    assert good["boot"]["problems"] == [] and good["boot"]["check_ms"] > 0
    assert "outline" in good["one-coin"]["problems"] and good["one-coin"]["expected"] == "grey product"
    broken = {row["broken"]: row["problems"] for row in report["broken"]}
    assert len(broken) == 6 and all(broken.values()), broken
    assert "| fast | boot | good |" in result.stdout and "| fast | boot | mesh mirrored |" in result.stdout
