"""The asset checks itself against its photo, through the real tritonserver (the ``silhouette`` weights
behind the real u2netp) and the worker's writers.

Good assets pass at every preset, on the drawn photos and on the real-photo set; a grey product's
asset, which the weights leave full of holes, does not. Deliberately broken assets (bench/broken_assets.py)
are each caught by the problem that names them. The pipeline core makes a short asset once more at
the next preset and says so, refuses one under ``strict``, only measures under ``report``, and an
asset of a repository exported before ``FRAMED_PHOTO`` existed is reported as unchecked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format

from asset.real_size import RealSize
from bench.broken_assets import broken_assets, slab, whole_frame_cut_out
from bench.photos import drawn_photos
from bench.real_photos import real_photos
from client_worker.pipeline import quality_check as check
from client_worker.pipeline.inference import MeshResult, TritonMeshClient
from client_worker.pipeline.photo_to_asset import NO_FRAMED_PHOTO, AssetPipeline, check_files, write_files
from client_worker.pipeline.presets import PRESETS
from client_worker.pipeline.quality_check import QUALITY_KEY, QualityMeasures, QualityRefused, measure_quality
from export.repository import parse_config
from img2mesh.contract import ENSEMBLE, FRAMED_PHOTO
from local_triton import LocalTriton

SIZE = RealSize(0.3)
PHOTOS = {photo.name: photo.encoded() for photo in drawn_photos()}
PHOTOS.update({photo.name: photo.make() for photo in real_photos() if photo.usable})
GREY = {photo.name for photo in real_photos() if photo.grey}
BROKEN_PHOTOS = ("boot", "lamp", "sofa")
"""Asymmetric in outline and in colour, so a mirror of either shows."""
EXPECTED = {
    "part removed": check.OUTLINE,
    "texture flipped": check.COLOURS,
    "texture mirrored": check.COLOURS,
    "mesh mirrored": check.MIRRORED,
    "loose flakes": check.LOOSE_PARTS,
    "slab of the whole frame": check.OUTLINE,
}


def mesh_of(url: str, data: bytes, preset: str) -> MeshResult:
    async def run() -> MeshResult:
        client = TritonMeshClient(url)
        try:
            chosen = PRESETS[preset]
            return await client.image_to_mesh(data, resolution=chosen.resolution, target_faces=chosen.target_faces,
                                              texture_size=chosen.texture_size)
        finally:
            await client.close()

    return asyncio.run(run())


def checked(mesh: MeshResult, preset: str) -> QualityMeasures:
    timings: dict[str, float] = {}
    _, files = write_files(mesh, PRESETS[preset], SIZE, timings)
    measures, unchecked = check_files(mesh, files, timings)
    assert measures is not None, unchecked
    assert timings["quality"] > 0
    return measures


@pytest.fixture(scope="module")
def meshes(silhouette_triton_server: LocalTriton) -> dict[tuple[str, str], MeshResult]:
    return {(name, preset): mesh_of(silhouette_triton_server.grpc_url, data, preset)
            for preset in PRESETS for name, data in PHOTOS.items()}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_good_assets_pass_and_grey_products_with_holes_do_not(meshes: dict[tuple[str, str], MeshResult],
                                                               preset: str) -> None:
    for name in PHOTOS:
        measures = checked(meshes[name, preset], preset)
        problems = [problem.code for problem in measures.problems]
        print(f"\n{name} at {preset}: {measures.to_dict()} {problems}")
        if name in GREY:
            assert check.OUTLINE in problems, f"{name}: the weights read its grey as background, its asset has holes"
        else:
            assert problems == [], name
            assert measures.silhouette_iou > max(measures.mirrored_iou, measures.flipped_iou), name


@pytest.mark.parametrize("name", BROKEN_PHOTOS)
def test_broken_assets_are_caught_by_the_problem_that_names_them(
    silhouette_triton_server: LocalTriton, meshes: dict[tuple[str, str], MeshResult], name: str
) -> None:
    preset = "fast"
    mesh = meshes[name, preset]
    whole_frame = mesh_of(silhouette_triton_server.grpc_url, whole_frame_cut_out(PHOTOS[name]), preset)
    found = {}
    for asset in [*broken_assets(mesh, PRESETS[preset], SIZE), slab(whole_frame, PRESETS[preset], SIZE)]:
        measures = measure_quality(asset.glb, mesh.framed_photo, asset.world_low, asset.world_high)
        found[asset.name] = [problem.code for problem in measures.problems]
        print(f"\n{name}, {asset.name}: {measures.to_dict()} {found[asset.name]}")
    assert set(found) == set(EXPECTED)
    for broken, code in EXPECTED.items():
        assert code in found[broken], (broken, found[broken])


def test_the_pipeline_makes_a_short_asset_again_at_the_next_preset_and_says_so(
    silhouette_triton_server: LocalTriton,
) -> None:
    coin = PHOTOS["one-coin"]

    async def make(mode: str) -> object:
        client = TritonMeshClient(silhouette_triton_server.grpc_url)
        pipeline = AssetPipeline(client, max_resolution=PRESETS["balanced"].resolution, default_size=SIZE)
        try:
            return await pipeline.make(coin, PRESETS["fast"], quality_check=mode)  # type: ignore[arg-type]
        except QualityRefused as refused:
            return refused
        finally:
            await client.close()

    reviewed = asyncio.run(make("review"))
    quality = reviewed.details[QUALITY_KEY]  # type: ignore[attr-defined]
    assert quality["verdict"] == "review" and reviewed.details["preset"] == "balanced"  # type: ignore[attr-defined]
    assert quality["retry"]["preset"] == "fast" and check.OUTLINE in [p["code"] for p in quality["retry"]["problems"]]
    assert all(problem["message"] for problem in quality["problems"])

    reported = asyncio.run(make("report"))
    assert reported.details["preset"] == "fast"  # type: ignore[attr-defined]
    assert set(reported.details[QUALITY_KEY]) == {"mode", "measures"}  # type: ignore[attr-defined]

    refused = asyncio.run(make("strict"))
    assert isinstance(refused, QualityRefused)
    assert str(refused).startswith("the model failed its check against the photo, also when made again at the next "
                                   "preset: ")
    assert refused.report[QUALITY_KEY]["verdict"] == "refused"


@pytest.fixture
def repository_without_framed_photo(silhouette_repository: Path, tmp_path: Path) -> Iterator[LocalTriton]:
    """The silhouette repository as exported before the ensemble returned ``FRAMED_PHOTO``."""
    import shutil

    copy = tmp_path / "repository"
    shutil.copytree(silhouette_repository, copy, symlinks=True)
    path = copy / ENSEMBLE / "config.pbtxt"
    config = parse_config(path)
    kept = [output for output in config.output if output.name != FRAMED_PHOTO]
    del config.output[:]
    config.output.extend(kept)
    for step in config.ensemble_scheduling.step:
        if FRAMED_PHOTO in step.output_map:
            del step.output_map[FRAMED_PHOTO]
    path.write_text(text_format.MessageToString(config))
    with LocalTriton(copy) as server:
        yield server


def test_a_repository_exported_before_the_framed_photo_still_makes_assets_reported_unchecked(
    repository_without_framed_photo: LocalTriton,
) -> None:
    async def make() -> object:
        client = TritonMeshClient(repository_without_framed_photo.grpc_url)
        try:
            pipeline = AssetPipeline(client, max_resolution=64, default_size=SIZE)
            return await pipeline.make(PHOTOS["boot"], PRESETS["fast"])
        finally:
            await client.close()

    asset = asyncio.run(make())
    expected = {"mode": "review", "verdict": "unchecked", "unchecked": NO_FRAMED_PHOTO}
    assert asset.details[QUALITY_KEY] == expected  # type: ignore[attr-defined]
    assert len(asset.files) == 3  # type: ignore[attr-defined]
