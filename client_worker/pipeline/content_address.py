"""The content address of a job's output: what decides, byte for byte, the files a job makes.

Two jobs with the same address get the same GLB, USDZ and poster, so the second may copy the
first's files instead of running the model again (``client_worker.asset_cache``). The address is a
sha256 over everything that shapes those bytes:

* the photo's bytes (the one the job meshes);
* the preset with its resolved values: the grid after the ``MAX_RESOLUTION`` cap, the triangle
  budget, the texture size and format (``AssetPipeline.resolved``);
* the real size the model is scaled to, and whether the job gave it (the metadata says so);
* the exact version of every model Triton will run for it (``TritonMeshClient.served_versions``),
  so a model version roll changes every address;
* the writer version: a digest of the source of the ``asset`` package and of the pipeline core
  (``client_worker/pipeline/photo_to_asset.py``), computed once per process, and the versions of the
  libraries those call to write the bytes. A change of the writers changes every address without
  anybody having to remember to bump a number.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import asset
from asset.real_size import RealSize
from client_worker.pipeline.presets import Preset

PIPELINE_CORE = Path(__file__).with_name("photo_to_asset.py")
"""The pipeline core's source (not imported here: it imports this module)."""
WRITER_LIBRARIES = ("numpy", "trimesh", "pygltflib", "pillow", "usd-core", "vtk")
"""The distributions the writers call to make the files' bytes (mesh preparation and decimation,
glTF, texture encoding, USD, the poster's renderer)."""


def source_digest(files: Iterable[Path]) -> str:
    """sha256 over the names (with their folder's, ``asset/glb.py``) and contents of ``files``."""
    digest = hashlib.sha256()
    for path in sorted(files, key=_name):
        digest.update(_name(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@functools.cache
def writer_version() -> str:
    """The digest of the writers' source and the versions of ``WRITER_LIBRARIES`` in this process."""
    sources = [*Path(asset.__file__).parent.glob("*.py"), PIPELINE_CORE]
    libraries = {name: metadata.version(name) for name in WRITER_LIBRARIES}
    return hashlib.sha256(f"{source_digest(sources)} {json.dumps(libraries, sort_keys=True)}".encode()).hexdigest()


@dataclass(frozen=True)
class ContentAddress:
    """An address (hex sha256) and the model versions it names (to check the run used them)."""

    value: str
    models: dict[str, int]


def content_address(
    photo: bytes, preset: Preset, size: RealSize, size_given: bool, model_versions: Mapping[str, int], writer: str
) -> ContentAddress:
    """The sha256 of the photo and the description of everything else that shapes the files.

    ``preset`` must already be resolved (capped); ``model_versions`` maps each model Triton runs
    to its version.
    """
    described = {
        "photo_sha256": hashlib.sha256(photo).hexdigest(),
        "preset": {"name": preset.name, "resolution": preset.resolution, "target_faces": preset.target_faces,
                   "texture_size": preset.texture_size, "texture_format": preset.texture_format.value},
        "size": {"metres": size.metres, "dimension": size.dimension, "given": size_given},
        "models": dict(model_versions),
        "writer": writer,
    }
    return ContentAddress(hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest(),
                          dict(model_versions))
