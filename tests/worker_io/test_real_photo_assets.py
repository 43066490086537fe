"""Real photographs become assets of their product, not of the photo: through the real tritonserver
(the ``silhouette`` TripoSR weights behind the real u2netp) and the worker's writers, the asset's
front view has the outline and proportions of the product that u2netp cut out of the photo.

The ``silhouette`` weights extrude whatever cut-out they are given, so the outline is the mask's;
with the generated U²-Net of earlier versions, coffee.png became a slab of the whole frame, table
included (aspect 1.49 against the product's 1.08), which the negative control below stands for.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from asset.poster import render_poster
from asset.real_size import RealSize
from bench.fidelity import OPAQUE, silhouette_iou
from bench.photo_measuring import local_cut_out
from bench.real_photos import real_photos
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.photo_to_asset import write_files
from client_worker.pipeline.presets import PRESETS
from local_triton import LocalTriton

MIN_IOU = {"coffee": 0.93, "present-on-brick": 0.93, "horse": 0.90}
"""The front view at ``balanced`` against the photo's u2netp cut-out (the acceptance for coffee.png:
0.93; measured 0.99). The horse's thin legs and tail thin out at the ``balanced`` grid (measured
0.92). Usable photos whose product is grey (the motorcycle's engine and wheels, a silver coin) are
left out: the ``silhouette`` weights read colours near TripoSR's 50 % grey background as background
(README), which says nothing about the mask."""
MAX_ASPECT_ERROR = 0.10
PHOTOS = tuple(MIN_IOU)


@pytest.fixture(scope="module")
def fronts(silhouette_triton_server: LocalTriton) -> Iterator[dict[str, np.ndarray]]:
    photos = {photo.name: photo.make() for photo in real_photos() if photo.name in PHOTOS}
    preset = PRESETS["balanced"]

    async def make() -> dict[str, np.ndarray]:
        client = TritonMeshClient(silhouette_triton_server.grpc_url)
        try:
            views = {}
            for name, data in photos.items():
                mesh = await client.image_to_mesh(data, resolution=preset.resolution, target_faces=preset.target_faces,
                                                  texture_size=preset.texture_size)
                prepared, _ = write_files(mesh, preset, RealSize(0.3), {})
                views[name] = np.asarray(Image.open(io.BytesIO(render_poster(prepared, azimuth_deg=0.0, elevation_deg=0.0))))
            return views
        finally:
            await client.close()

    yield asyncio.run(make())


@pytest.fixture(scope="module")
def cut_outs(u2netp) -> dict[str, np.ndarray]:
    cut = local_cut_out(u2netp)
    return {photo.name: cut(photo.make()) for photo in real_photos() if photo.name in PHOTOS}


def _aspect(rgba: np.ndarray) -> float:
    rows, columns = np.nonzero(rgba[..., 3] >= OPAQUE)
    return (np.ptp(columns) + 1) / (np.ptp(rows) + 1)


@pytest.mark.parametrize("name", PHOTOS)
def test_the_asset_is_the_product_not_the_photo(fronts: dict[str, np.ndarray], cut_outs: dict[str, np.ndarray],
                                                 name: str) -> None:
    front, product = fronts[name], cut_outs[name]
    whole_frame = product.copy()
    whole_frame[..., 3] = 255
    iou, aspect, product_aspect = silhouette_iou(front, product), _aspect(front), _aspect(product)
    print(f"\n{name}: front view vs u2netp's cut-out IoU {iou:.4f}; aspect {aspect:.3f} (product {product_aspect:.3f}, "
          f"frame {_aspect(whole_frame):.3f}); vs the whole frame IoU {silhouette_iou(front, whole_frame):.4f}")
    assert iou >= MIN_IOU[name]
    assert abs(aspect / product_aspect - 1) <= MAX_ASPECT_ERROR
    # Negative control: the slab of the whole photo that a mask of everything gives fails the check.
    assert silhouette_iou(front, whole_frame) < MIN_IOU[name] or abs(_aspect(whole_frame) / product_aspect - 1) > MAX_ASPECT_ERROR
