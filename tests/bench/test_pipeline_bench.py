"""bench/pipeline.py runs end to end on tiny weights (eager reference and a real local Triton) and
reports figures that hold: the band mesh equals the dense one, with fewer decoder points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"background_removal", "encoder", "grid", "marching_cubes", "texture", "colors", "glb", "total"}


def test_the_pipeline_benchmark_compares_dense_eager_with_the_triton_band(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", "--size", "tiny", "--resolution", "64", "--concurrency-jobs", "0",
         "--cache", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["faces_band"] == report["faces_dense"] > 0
    assert report["chamfer_rel"] < 1e-5
    assert 0 < report["band_points"] < report["dense_points"] == 64**3
    assert 0 < report["faces_decimated"] <= report["faces_band"]
    assert 0 < report["texture_share"] < 1
    assert set(report["reference_ms"]) == set(report["triton_ms"]) == STAGES
    assert report["reference_ms"]["texture"] == 0 < report["triton_ms"]["texture"]
    assert "| end to end |" in result.stdout
    # A candidate's photo check (one U²-Net pass) costs a fraction of the mesh ensemble's request.
    assert 0 < report["photo_check_ms"] < report["mesh_request_ms"]
    assert 0 < report["photo_check_ratio"] < 1
    assert "| photo check of one candidate" in result.stdout
