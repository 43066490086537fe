"""The content address changes with each input that shapes a job's files and with nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from asset.material import TextureFormat
from asset.real_size import RealSize
from client_worker.pipeline.content_address import content_address, source_digest, writer_version
from client_worker.pipeline.presets import PRESETS
from img2mesh.contract import ENCODER, ENSEMBLE, FOREGROUND, IMAGE_PREPROCESS, MESHER, PHOTO_CHECK, REMBG

PHOTO = b"\xff\xd8\xff\xe0 a product photo"
BALANCED = PRESETS["balanced"]
SIZE = RealSize(0.3)
MODELS = {ENSEMBLE: 1, IMAGE_PREPROCESS: 1, REMBG: 1, FOREGROUND: 1, ENCODER: 1, MESHER: 1}
BASE = {"photo": PHOTO, "preset": BALANCED, "size": SIZE, "size_given": False, "model_versions": MODELS,
        "writer": "w1"}


def address(**changes: object) -> str:
    return content_address(**{**BASE, **changes}).value  # type: ignore[arg-type]


def test_the_same_inputs_give_the_same_address_whatever_the_order_of_the_models() -> None:
    assert address() == address(model_versions=dict(reversed(MODELS.items()))) == address()
    assert len(address()) == 64 and int(address(), 16) >= 0
    assert content_address(**BASE).models == MODELS  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [
    {"photo": PHOTO + b"\x00"},
    {"preset": PRESETS["fast"]},
    {"preset": dataclasses.replace(BALANCED, resolution=32)},  # MAX_RESOLUTION's cap, resolved
    {"preset": dataclasses.replace(BALANCED, target_faces=59_999)},
    {"preset": dataclasses.replace(BALANCED, texture_size=512)},
    {"preset": dataclasses.replace(BALANCED, texture_format=TextureFormat.PNG)},
    {"preset": dataclasses.replace(BALANCED, name="custom")},
    {"size": RealSize(0.31)},
    {"size": RealSize(0.3, "height")},
    {"size_given": True},
    {"model_versions": {**MODELS, ENCODER: 2}},
    {"model_versions": {**MODELS, REMBG: 2}},
    {"model_versions": {**MODELS, PHOTO_CHECK: 1}},
    {"writer": "w2"},
], ids=lambda changes: next(iter(changes)))
def test_each_input_changes_the_address(changes: dict[str, object]) -> None:
    assert address(**changes) != address()


def test_the_writer_version_follows_every_byte_of_the_writers_source(tmp_path: Path) -> None:
    (tmp_path / "asset").mkdir()
    glb, usdz = tmp_path / "asset" / "glb.py", tmp_path / "asset" / "usdz.py"
    glb.write_text("def write(): return 1\n")
    usdz.write_text("def write(): return 2\n")
    before = source_digest([glb, usdz])
    assert source_digest([usdz, glb]) == before
    glb.write_text("def write(): return 1 \n")
    changed = source_digest([glb, usdz])
    assert changed != before
    renamed = glb.rename(glb.with_name("gltf.py"))
    assert source_digest([renamed, usdz]) != changed
    assert writer_version() == writer_version() and len(writer_version()) == 64
