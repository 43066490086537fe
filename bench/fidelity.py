"""What a shopper sees against the photo: silhouette IoU and colour difference of a rendered view.

    python -m bench.fidelity                     # official-size silhouette weights, every preset
    python -m bench.fidelity --size small --presets fast

Both images are cropped to their object's bounding box and the render is resized to the photo's
crop, so the measures ignore where and how large the object is drawn and compare its outline and
colours only. Used by the fidelity tests (model-viewer screenshots in Chromium) and by this command,
which sends the drawn photos of :mod:`bench.photos` through the portable repository of the
``silhouette`` weights on the local ``tritonserver`` and the worker's writers, renders the front
view with the poster renderer (VTK, straight from the front), and prints per preset and photo the
IoU, the colour difference and each stage's time, then one JSON line. So a change to meshing,
decimation, texture baking or compression is judged on what a shopper sees, not only on speed.
The official size costs about 4 minutes of export once (cached in ``--cache``; most of it the
exporter's ONNX parity check) and 20-50 s of inference per photo on two shared CPU cores, and
measures the same IoU as ``small`` (the same texel grid); ``small`` runs all presets in 1.5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion

from asset.poster import render_poster
from asset.real_size import RealSize
from bench.photos import drawn_photos
from bench.pipeline import portable_repository
from bench.weights import generated_weights
from client_worker.pipeline.photo_to_asset import write_files
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.presets import PRESETS
from export.build import model_shapes
from export.u2net_wheel import fetch_u2netp
from local_triton import LocalTriton
from triposr.checkpoint import load_tsr

OPAQUE = 128
"""Alpha from which a rendered pixel belongs to the object (edges are anti-aliased)."""
EDGE_MARGIN = 0.03
"""The colour is compared away from the outline, by this share of the crop's larger side: there the
texture's texels, the render's anti-aliasing and the extrusion's grey side walls mix colours."""


def _crop(mask: np.ndarray) -> tuple[slice, slice]:
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the image shows no object")
    return slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1)


def aligned(rendered: np.ndarray, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The render and the photo (RGBA uint8 [H, W, 4]) cropped to their objects, the render resized to the photo's crop."""
    photo_crop = photo[_crop(photo[..., 3] >= OPAQUE)]
    render_crop = rendered[_crop(rendered[..., 3] >= OPAQUE)]
    height, width = photo_crop.shape[:2]
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(render_crop)).resize((width, height), Image.Resampling.BILINEAR))
    return resized, photo_crop


def silhouette_iou(rendered: np.ndarray, photo: np.ndarray) -> float:
    """Intersection over union of the rendered object and the photo's foreground, both cropped to their boxes."""
    render, reference = aligned(rendered, photo)
    a, b = render[..., 3] >= OPAQUE, reference[..., 3] >= OPAQUE
    return float((a & b).sum() / (a | b).sum())


def colour_difference(rendered: np.ndarray, photo: np.ndarray) -> float:
    """Mean absolute RGB difference (0–255) between render and photo inside both objects, away from the outline."""
    render, reference = aligned(rendered, photo)
    inside = (render[..., 3] >= OPAQUE) & (reference[..., 3] >= OPAQUE)
    margin = max(1, round(EDGE_MARGIN * max(inside.shape)))
    inside = binary_erosion(inside, iterations=margin)
    if not inside.any():
        raise ValueError("render and photo share no object pixels away from the outline")
    difference = np.abs(render[..., :3].astype(np.float64) - reference[..., :3].astype(np.float64))
    return float(difference[inside].mean())


async def _measure(url: str, presets: list[str], size: RealSize) -> list[dict[str, object]]:
    client = TritonMeshClient(url)
    rows = []
    try:
        for preset_name in presets:
            preset = PRESETS[preset_name]
            for photo in drawn_photos():
                started = time.perf_counter()
                mesh = await client.image_to_mesh(photo.encoded(), resolution=preset.resolution,
                                                  target_faces=preset.target_faces, texture_size=preset.texture_size)
                timings = {"inference": round((time.perf_counter() - started) * 1000, 1),
                           **{f"triton.{stage}": ms for stage, ms in mesh.info.get("timings_ms", {}).items()}}
                prepared, _files = write_files(mesh, preset, size, timings)
                front = np.asarray(Image.open(io.BytesIO(render_poster(prepared, azimuth_deg=0.0, elevation_deg=0.0))))
                truth = photo.array()
                rows.append({"preset": preset_name, "photo": photo.name, "format": photo.format,
                             "iou": round(silhouette_iou(front, truth), 4),
                             "colour_difference": round(colour_difference(front, truth), 2), "timings_ms": timings})
    finally:
        await client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "small"], default="official")
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)

    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = generated_weights(args.cache, args.size, "silhouette")
    repository = portable_repository(args.cache, checkpoint, fetch_u2netp(), model_shapes(load_tsr(str(checkpoint))))
    with LocalTriton(repository) as server:
        rows = asyncio.run(_measure(server.grpc_url, args.presets, RealSize(0.4)))

    stages = list(dict.fromkeys(stage for row in rows for stage in row["timings_ms"]))  # type: ignore[union-attr]
    print(f"\n{args.size} silhouette weights; front view by the poster renderer against the drawn photo\n")
    print("| preset | photo | IoU | colour difference (/255) | " + " | ".join(f"{stage} (ms)" for stage in stages) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(stages))
    for row in rows:
        times = row["timings_ms"]
        print(f"| {row['preset']} | {row['photo']} ({row['format']}) | {row['iou']:.4f} | {row['colour_difference']:.2f} | "
              + " | ".join(f"{times.get(stage, 0):.0f}" for stage in stages) + " |")  # type: ignore[union-attr]
    print(json.dumps({"size": args.size, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
