"""bench/fidelity.py runs end to end on the small silhouette weights (a real local Triton) and
reports, per preset and drawn photo, an IoU and colour difference that hold, with stage times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fidelity_benchmark_prints_a_table_and_a_json_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.fidelity", "--size", "small", "--presets", "fast", "--cache", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["size"] == "small"
    assert [(row["preset"], row["photo"]) for row in report["results"]] == [("fast", "boot"), ("fast", "lamp"), ("fast", "sofa")]
    for row in report["results"]:
        assert row["iou"] >= 0.9 and row["colour_difference"] < 20, row
        assert row["timings_ms"]["inference"] > 0 and row["timings_ms"]["poster"] > 0, row
    assert "| fast | boot (JPEG) |" in result.stdout
