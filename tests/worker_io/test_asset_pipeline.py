"""The pipeline core's three files from one prepared mesh, with Triton stood in by a client that
returns a known mesh: a textured one (what Triton's texture baking returns) or vertex colours."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asset.glb import glb_summary, read_glb_json
from asset.real_size import RealSize
from client_worker.pipeline.photo_to_asset import MODEL_FILE, POSTER_FILE, USDZ_FILE, AssetPipeline
from client_worker.pipeline.inference import MeshResult
from client_worker.pipeline.presets import PRESETS
from export.u2net_models import U2NETP
from img2mesh.contract import ENSEMBLE
from tests.support.arkit import arkit_problems
from tests.support.product_mesh import product_mesh
from tests.support.gltf_validator import GltfValidator
from tests.support.textured_mesh import textured_product


class KnownMesh:
    """Stands in for ``TritonMeshClient``: returns one mesh and records what each request asked for."""

    def __init__(self, mesh: MeshResult) -> None:
        self.mesh = mesh
        self.requests: list[dict[str, int]] = []

    async def image_to_mesh(self, image: bytes, *, resolution: int, target_faces: int, texture_size: int) -> MeshResult:
        self.requests.append({"resolution": resolution, "target_faces": target_faces, "texture_size": texture_size})
        return self.mesh

    async def background_removal(self) -> dict[str, object]:
        return {"version": 1, "name": U2NETP.name, "md5": U2NETP.md5}


def mesh_result(textured: bool) -> MeshResult:
    if textured:
        product = textured_product()
        return MeshResult(product.vertices, product.faces, product.vertex_colors, {"face_count": len(product.faces)},
                          ENSEMBLE, "1", "1", uvs=product.uvs, texture=product.texture)
    vertices, faces, colors = product_mesh()
    return MeshResult(vertices, faces, colors, {}, ENSEMBLE, "1", "1")


def pipeline(mesh: MeshResult) -> AssetPipeline:
    return AssetPipeline(KnownMesh(mesh), max_resolution=64, default_size=RealSize(0.3))  # type: ignore[arg-type]


async def test_a_textured_mesh_becomes_glb_usdz_and_poster(gltf_validator: GltfValidator, tmp_path: Path) -> None:
    maker = pipeline(mesh_result(textured=True))
    asset = await maker.make(b"photo", PRESETS["balanced"])
    assert [(f.role, f.extension, f.content_type) for f in asset.files] == [
        (MODEL_FILE, ".glb", "model/gltf-binary"),
        (USDZ_FILE, ".usdz", "model/vnd.usdz+zip"),
        (POSTER_FILE, ".png", "image/png"),
    ]
    glb = asset.file(MODEL_FILE).data
    assert gltf_validator.assert_valid(glb)["issues"]["numWarnings"] == 0
    assert glb_summary(glb)["has_texture"]
    assert read_glb_json(glb)["images"][0]["mimeType"] == "image/jpeg", "balanced stores JPEG"
    usdz = tmp_path / "model.usdz"
    usdz.write_bytes(asset.file(USDZ_FILE).data)
    assert arkit_problems(usdz) == []
    assert Image.open(io.BytesIO(asset.file(POSTER_FILE).data)).size == (1024, 1024)

    details = asset.details
    # The preset's 256 capped by MAX_RESOLUTION; its triangle budget and texture size go to Triton.
    assert maker.inference.requests == [  # type: ignore[attr-defined]
        {"resolution": 64, "target_faces": PRESETS["balanced"].target_faces,
         "texture_size": PRESETS["balanced"].texture_size}
    ]
    assert details["color_source"] == "texture"
    assert details["texture"] == {"width": 256, "height": 256, "format": "jpeg"}
    assert details["size"] == {"dimension": "largest_side", "metres": 0.3, "source": "default"}
    assert max(details["dimensions_m"].values()) == pytest.approx(0.3)
    assert details["file_sizes_bytes"] == {f.role: len(f.data) for f in asset.files}
    assert set(details["timings_ms"]) >= {"inference", "encoding", "prepare", MODEL_FILE, USDZ_FILE, POSTER_FILE}


async def test_a_jobs_size_sets_the_models_real_size() -> None:
    asset = await pipeline(mesh_result(textured=True)).make(b"photo", PRESETS["fast"], size=RealSize(0.12, "height"))
    assert asset.details["size"] == {"dimension": "height", "metres": 0.12, "source": "job"}
    assert asset.details["dimensions_m"]["height"] == pytest.approx(0.12)
    bounds = glb_summary(asset.file(MODEL_FILE).data)
    assert bounds["bounds_max"][1] - bounds["bounds_min"][1] == pytest.approx(0.12, rel=1e-5)


async def test_vertex_colours_still_make_all_three_files(gltf_validator: GltfValidator) -> None:
    asset = await pipeline(mesh_result(textured=False)).make(b"photo", PRESETS["quality"])
    assert [f.role for f in asset.files] == [MODEL_FILE, USDZ_FILE, POSTER_FILE]
    gltf_validator.assert_valid(asset.file(MODEL_FILE).data)
    assert asset.details["color_source"] == "vertex_colors" and asset.details["texture"] is None
    assert glb_summary(asset.file(MODEL_FILE).data)["has_colors"]
    poster = np.asarray(Image.open(io.BytesIO(asset.file(POSTER_FILE).data)))
    assert poster[0, 0, 3] == 0 and poster[:, :, 3].max() == 255
