"""bench/postprocess.py times every host step of a job at a preset and reports them as a table and JSON,
sets each step against the fastest equivalent libraries, reports how the cost grows, and measures what
the mesher's BLS calls add to the decoder's compute through a real tritonserver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.anchors import NO_ANCHOR
from bench.postprocess import MESHER_STEPS, WRITER_STEPS, scaling
from client_worker.pipeline.photo_to_asset import WRITERS
from client_worker.pipeline.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def test_the_postprocessing_benchmark_reports_each_step_its_anchor_and_the_bls_overhead(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.postprocess", "--presets", "fast", "--rounds", "1", "--triton", "--anchors",
         "--cache", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    fast = report["presets"]["fast"]
    assert set(fast["steps"]) == {*MESHER_STEPS, *WRITER_STEPS}
    assert fast["mesher_cpu_ms"] > 0 and fast["writers_cpu_ms"] > 0
    assert all(step["cpu_ms"] >= 0 and step["wall_ms"] >= 0 for step in fast["steps"].values())
    assert fast["surface_faces"] > fast["faces"] > 0.9 * 20_000
    assert set(fast["bytes"]) == {writer.role for writer in WRITERS} and all(fast["bytes"].values())
    assert "| mesher | **total** |" in result.stdout

    for name, step in fast["steps"].items():
        assert {"anchor", "anchor_cpu_ms", "ratio"} <= set(step)
        if step["anchor"] is None:
            assert step["no_anchor"], name
        else:
            assert step["ratio"] == fast["anchors"][name]["ratio"] > 0
    assert set(NO_ANCHOR).isdisjoint(fast["anchors"])
    # VTK and scikit-image are the project's own dependencies, so their marching cubes always run. On
    # the dense grid scikit-image's gives the narrow band's surface exactly; VTK's flying edges split
    # a few ambiguous cells the other way.
    surface = {row["name"]: row for row in fast["anchors"]["surface"]["candidates"]}
    assert surface["scikit-image Lewiner, dense grid"]["hausdorff_cells"] == 0.0
    for name in ("VTK vtkFlyingEdges3D, dense grid", "scikit-image Lewiner, dense grid"):
        assert surface[name]["equivalent"], surface[name]
        assert surface[name]["faces_ratio"] == 1.0 and surface[name]["chamfer_cells"] < 0.01
    assert fast["steps"]["surface"]["anchor"] in surface
    poster = {row["name"]: row for row in fast["anchors"]["poster"]["candidates"]}
    assert not poster["VTK OSMesa 1×"]["equivalent"], "no supersampling shows its jagged edges"

    bls = report["bls"]["fast"]
    assert bls["calls"] >= 3  # band levels, texels, vertices
    assert 0 < bls["decoder_compute_ms"] < bls["in_calls_ms"]
    assert bls["bls_overhead_ms"] == pytest.approx(bls["in_calls_ms"] - bls["decoder_compute_ms"], abs=0.2)


def test_the_narrow_band_grows_as_the_square_of_the_resolution() -> None:
    report = scaling(PRESETS["fast"], 1, resolutions=(64, 96, 128, 160), budgets=(5_000, 10_000),
                     textures=(256, 512))
    assert [row["resolution"] for row in report["by_resolution"]] == [64, 96, 128, 160]
    # A shell of the grid: about R², far from a dense grid's R³.
    assert 1.7 < report["exponents"]["points_evaluated"] < 2.4
    assert all(row["mesher_cpu_ms"] > 0 and row["writers_cpu_ms"] > 0
               for row in report["by_budget"] + report["by_texture"])
    assert report["by_texture"][0]["bytes"]["model"] < report["by_texture"][1]["bytes"]["model"]
