"""The photo becomes its asset: drawn photos through the real tritonserver, the worker's writers and
model-viewer in headless Chromium, compared with the photos themselves.

Triton serves the small ``silhouette`` weights (triposr/silhouette.py), whose mesh is the photo's
product extruded in its colours, so what a shopper sees must be the photo: its outline (IoU),
its colours, left left and top up, the back mirrored, at the requested real size, in the GLB, the
USDZ and the poster. Every check also runs on a negative control (the mirrored or upside-down
photo, swapped UVs, a flipped texture) that must fail it, so no check passes by accident.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxr import Usd, UsdGeom
from scipy.ndimage import binary_erosion

from asset import usdz as usdz_layout
from asset.glb import glb_summary, write_glb
from asset.material import Material
from asset.mesh_preparation import prepare_mesh
from asset.real_size import RealSize
from bench.fidelity import colour_difference, silhouette_iou
from bench.photos import DrawnPhoto, drawn_photos
from client_worker.pipeline.photo_to_asset import MODEL_FILE, POSTER_FILE, USDZ_FILE, Asset, AssetPipeline
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.presets import PRESETS
from local_triton import LocalTriton
from tests.support.model_viewer import ModelViewer

MIN_IOU = {"fast": 0.90, "balanced": 0.95}
"""The issue's acceptance: the rendered front view against the photo's foreground."""
MAX_COLOUR_DIFFERENCE = {"fast": 20.0, "balanced": 20.0}
"""Mean |RGB| difference (0–255) in the object away from its outline. Measured 15.5–17.8 at both
presets: model-viewer's neutral lighting of the rough material brightens the colours by about 10,
the rest is the texels' and JPEG's blur near colour edges."""
MAX_USDZ_COLOUR_DIFFERENCE = 8.0
MIN_POSTER_IOU = 0.6
"""The poster looks from 30° aside and 20° above, so its outline is foreshortened and shows a side:
measured 0.71–0.79 against the photo."""
SIZE = RealSize(0.4)
PRESET_NAMES = tuple(MIN_IOU)


@dataclass
class Rendered:
    photo: DrawnPhoto
    assets: dict[str, Asset]  # by preset
    front: dict[str, np.ndarray]  # screenshot by preset
    back: np.ndarray  # at "fast"


@pytest.fixture(scope="module")
def rendered(silhouette_triton_server: LocalTriton, model_viewer: ModelViewer) -> Iterator[dict[str, Rendered]]:
    """Every drawn photo at every preset, shown from the front (and at ``fast`` from the back)."""
    photos = drawn_photos()

    async def make() -> dict[tuple[str, str], Asset]:
        client = TritonMeshClient(silhouette_triton_server.grpc_url)
        pipeline = AssetPipeline(client, max_resolution=PRESETS["balanced"].resolution, default_size=SIZE)
        try:
            return {(photo.name, preset): await pipeline.make(photo.encoded(), PRESETS[preset])
                    for photo in photos for preset in PRESET_NAMES}
        finally:
            await client.close()

    assets = asyncio.run(make())
    fronts = model_viewer.screenshots({f"{name}-{preset}": asset.file(MODEL_FILE).data for (name, preset), asset in assets.items()})
    backs = model_viewer.screenshots({photo.name: assets[photo.name, "fast"].file(MODEL_FILE).data for photo in photos},
                                     azimuth="180deg")
    yield {photo.name: Rendered(photo, {preset: assets[photo.name, preset] for preset in PRESET_NAMES},
                                {preset: fronts[f"{photo.name}-{preset}"] for preset in PRESET_NAMES}, backs[photo.name])
           for photo in photos}


def matches(shot: np.ndarray, photo: np.ndarray, preset: str) -> bool:
    """The fidelity check of a rendered view: the photo's outline and colours."""
    return silhouette_iou(shot, photo) >= MIN_IOU[preset] and colour_difference(shot, photo) <= MAX_COLOUR_DIFFERENCE[preset]


def _figures(shot: np.ndarray, photo: np.ndarray) -> str:
    return f"IoU {silhouette_iou(shot, photo):.4f}, colour difference {colour_difference(shot, photo):.2f}/255"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_front_view_is_the_photo(rendered: dict[str, Rendered], preset: str) -> None:
    for name, item in rendered.items():
        shot, photo = item.front[preset], item.photo
        mirrored, upside_down = photo.mirrored().array(), photo.upside_down().array()
        print(f"\n{name} ({photo.format}, {photo.rgba.width}x{photo.rgba.height}) at {preset}: {_figures(shot, photo.array())}; "
              f"against the mirrored photo: {_figures(shot, mirrored)}; upside down: {_figures(shot, upside_down)}")
        assert silhouette_iou(shot, photo.array()) >= MIN_IOU[preset], name
        assert colour_difference(shot, photo.array()) <= MAX_COLOUR_DIFFERENCE[preset], name
        # Negative controls: the same render against a mirrored or upside-down photo fails.
        assert not matches(shot, mirrored, preset), f"{name}: left and right are told apart"
        assert not matches(shot, upside_down, preset), f"{name}: top and bottom are told apart"


def test_back_view_shows_the_back(rendered: dict[str, Rendered]) -> None:
    """Seen from behind, the extruded product is the photo mirrored left-right."""
    for name, item in rendered.items():
        mirrored = item.photo.mirrored().array()
        print(f"\n{name} back: against the mirrored photo {_figures(item.back, mirrored)}; "
              f"against the photo {_figures(item.back, item.photo.array())}")
        assert matches(item.back, mirrored, "fast"), name
        assert not matches(item.back, item.photo.array(), "fast"), name


def _extent(glb: bytes) -> np.ndarray:
    summary = glb_summary(glb)
    return np.asarray(summary["bounds_max"]) - np.asarray(summary["bounds_min"])


def test_the_glb_has_the_real_size_and_the_photos_proportions(rendered: dict[str, Rendered]) -> None:
    for name, item in rendered.items():
        rows, columns = np.nonzero(item.photo.foreground())
        photo_ratio = (columns.ptp() + 1) / (rows.ptp() + 1)
        for preset, asset in item.assets.items():
            width, height, _ = _extent(asset.file(MODEL_FILE).data)  # glTF: x right, y up, z towards the viewer
            print(f"\n{name} at {preset}: {width:.4f} x {height:.4f} m, width/height {width / height:.3f} (photo {photo_ratio:.3f})")
            assert max(width, height) == pytest.approx(SIZE.metres, rel=1e-4), "the largest side has the requested size"
            assert width / height == pytest.approx(photo_ratio, rel=0.05), name
            # Negative control: the transposed proportions (a frame turned by 90°) fail.
            assert height / width != pytest.approx(photo_ratio, rel=0.05), name


def _usdz_front_colours(path: Path, swap_uvs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Front-face vertex positions (x, y) and their colours looked up in the USDZ's texture by their st."""
    stage = Usd.Stage.Open(str(path))  # kept: its prims die with it
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(usdz_layout.MESH))
    positions = np.asarray(mesh.GetPointsAttr().Get(), dtype=np.float64)
    st = np.asarray(UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st").Get(), dtype=np.float64)
    if swap_uvs:
        st = st[:, ::-1]
    with zipfile.ZipFile(path) as package:
        texture_name = next(name for name in package.namelist() if name.startswith("texture."))
        texture = np.asarray(Image.open(io.BytesIO(package.read(texture_name))).convert("RGB"))
    height, width, _ = texture.shape
    rows = np.clip(((1.0 - st[:, 1]) * height).astype(int), 0, height - 1)  # USD's t points up
    columns = np.clip((st[:, 0] * width).astype(int), 0, width - 1)
    front = positions[:, 2] > positions[:, 2].max() - 1e-3 * SIZE.metres
    return positions[front, :2], texture[rows, columns][front].astype(np.float64)


def _photo_colours_at(photo: DrawnPhoto, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo's colour at each front position, by the position's place in the object's box, and
    whether that is away from the outline (the texture mixes colours there)."""
    mask = photo.foreground()
    rows, columns = np.nonzero(mask)
    low, high = positions.min(axis=0), positions.max(axis=0)
    u = (positions[:, 0] - low[0]) / (high[0] - low[0])
    v = (high[1] - positions[:, 1]) / (high[1] - low[1])  # image rows grow downwards
    r = np.round(rows.min() + v * (rows.max() - rows.min())).astype(int)
    c = np.round(columns.min() + u * (columns.max() - columns.min())).astype(int)
    inner = binary_erosion(mask, iterations=max(2, round(0.03 * max(mask.shape))))
    return photo.array()[r, c, :3].astype(np.float64), inner[r, c]


def test_usdz_texture_and_uvs_give_the_front_colours(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    for name, item in rendered.items():
        path = tmp_path / f"{name}.usdz"  # one file per product: usd-core caches what it opened by path
        path.write_bytes(item.assets["fast"].file(USDZ_FILE).data)
        differences = {}
        for swap in (False, True):
            positions, colours = _usdz_front_colours(path, swap)
            expected, inner = _photo_colours_at(item.photo, positions)
            differences[swap] = float(np.abs(colours - expected)[inner].mean())
        print(f"\n{name} USDZ front colours: difference {differences[False]:.2f}/255; swapped UVs: {differences[True]:.2f}")
        assert differences[False] <= MAX_USDZ_COLOUR_DIFFERENCE, name
        assert differences[True] > MAX_USDZ_COLOUR_DIFFERENCE, f"{name}: swapped UVs are caught"


def test_the_poster_shows_the_products_outline(rendered: dict[str, Rendered]) -> None:
    for name, item in rendered.items():
        poster = np.asarray(Image.open(io.BytesIO(item.assets["fast"].file(POSTER_FILE).data)).convert("RGBA"))
        photo, mirrored = item.photo.array(), item.photo.mirrored().array()
        print(f"\n{name} poster: IoU {silhouette_iou(poster, photo):.4f}; with the mirrored photo {silhouette_iou(poster, mirrored):.4f}")
        assert poster_shows(poster, photo, mirrored), name
        assert not poster_shows(poster, mirrored, photo), f"{name}: negative control, the mirrored photo"


def poster_shows(poster: np.ndarray, photo: np.ndarray, mirrored: np.ndarray) -> bool:
    """The poster's outline is close to the photo's, and closer than to its mirror image."""
    iou = silhouette_iou(poster, photo)
    return iou >= MIN_POSTER_IOU and iou > silhouette_iou(poster, mirrored)


def test_a_flipped_texture_fails_the_colour_check(silhouette_triton_server: LocalTriton, model_viewer: ModelViewer) -> None:
    """Negative control of the browser colour check: the same mesh with its texture upside down."""
    photo = drawn_photos()[0]
    preset = PRESETS["fast"]

    async def mesh() -> object:
        client = TritonMeshClient(silhouette_triton_server.grpc_url)
        try:
            return await client.image_to_mesh(photo.encoded(), resolution=preset.resolution,
                                              target_faces=preset.target_faces, texture_size=preset.texture_size)
        finally:
            await client.close()

    result = asyncio.run(mesh())
    glbs = {}
    for label, texture in (("upright", result.texture), ("flipped", result.texture[::-1])):
        prepared = prepare_mesh(result.vertices, result.faces, result.vertex_colors, uvs=result.uvs, texture=texture, size=SIZE)
        glbs[label] = write_glb(prepared, Material(texture_format=preset.texture_format))
    shots = model_viewer.screenshots(glbs)
    upright, flipped = (colour_difference(shots[label], photo.array()) for label in ("upright", "flipped"))
    print(f"\n{photo.name}: colour difference {upright:.2f}/255, with the texture flipped {flipped:.2f}")
    assert upright <= MAX_COLOUR_DIFFERENCE["fast"] < flipped
