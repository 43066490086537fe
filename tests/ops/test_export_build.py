"""``python -m export build``: the U²-Net is checked first, a failed build leaves no output folder it
made, and the repository records which U²-Net each rembg version is, where Triton publishes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from export.repository import U2NET_RECORD, parse_config
from export.u2net_models import U2NETP
from img2mesh.contract import CONFIG_U2NET_VERSIONS, REMBG
from tests.support.triton import GeneratedWeights

ROOT = Path(__file__).resolve().parents[2]


def export(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "export", "build", "--flavour", "portable", *arguments],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)


def test_a_wrong_u2net_fails_before_tripo_sr_is_exported_and_leaves_nothing(
        test_weights: GeneratedWeights, tmp_path: Path) -> None:
    truncated = tmp_path / "u2netp.onnx"
    truncated.write_bytes(test_weights.u2net.read_bytes()[:100_000])
    output = tmp_path / "repository"
    result = export("--checkpoint", str(test_weights.analytic), "--u2net", str(truncated), "--output", str(output))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "is none of rembg's published U²-Nets" in line and "--u2net-unverified" in line
    assert "verify_checksum" not in line and "loading TripoSR" not in result.stdout
    assert not output.exists()


def test_a_failed_build_leaves_no_output_folder(test_weights: GeneratedWeights, tmp_path: Path) -> None:
    output = tmp_path / "new" / "repository"
    result = export("--checkpoint", str(tmp_path / "no-checkpoint"), "--u2net", str(test_weights.u2net),
                    "--output", str(output))
    assert result.returncode == 2 and "is not a directory nor a hub repository id" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


def test_the_repository_records_each_rembg_versions_u2net(test_weights: GeneratedWeights, tmp_path: Path) -> None:
    output = tmp_path / "repository"
    first = export("--checkpoint", str(test_weights.analytic), "--u2net", str(test_weights.u2net), "--output", str(output))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "rembg version 1 (u2netp)" in first.stdout
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(test_weights.u2net, cache / U2NETP.file_name)  # --u2net by name reuses a verified file
    second = export("--checkpoint", str(test_weights.analytic), "--u2net", "u2netp", "--cache-dir", str(cache),
                    "--output", str(output))
    assert second.returncode == 0, second.stderr[-2000:]
    record = {"name": "u2netp", "md5": U2NETP.md5}
    for version in (1, 2):
        assert json.loads((output / REMBG / str(version) / U2NET_RECORD).read_text()) == record
    config = parse_config(output / REMBG / "config.pbtxt")
    assert json.loads(config.parameters[CONFIG_U2NET_VERSIONS].string_value) == {"1": record, "2": record}
