"""npm packages the tests run with node (the glTF validator, model-viewer, playwright-core),
installed once at pinned versions into a cache outside the repository
(``$PHOTO_TO_3D_NPM_CACHE``, default ``~/.cache/photo-to-3d/npm``); CI can cache that folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path


def npm_cache_dir() -> Path:
    return Path(os.environ.get("PHOTO_TO_3D_NPM_CACHE", Path.home() / ".cache" / "photo-to-3d" / "npm"))


def ensure_npm_package(name: str, version: str) -> Path:
    """Return the installed package's folder, installing the pinned version with npm if needed."""
    prefix = npm_cache_dir()
    package = prefix / "node_modules" / name
    manifest = package / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == version:
        return package
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError(f"{name} needs node and npm on PATH (apt-get install nodejs npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{name}@{version}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return package
