"""The quality check's measures on good and on deliberately broken assets, per preset and photo.

    python -m bench.quality_check                       # small silhouette weights, every preset
    python -m bench.quality_check --presets fast --photos boot coffee
    python -m bench.quality_check --checkpoint DIR      # other weights: a TripoSR config.yaml + model.ckpt

Sends the drawn photos (:mod:`bench.photos`) and the usable real photos (:mod:`bench.real_photos`)
through the portable repository of the ``silhouette`` weights on the local ``tritonserver``, writes
the files as the worker does and checks them as the worker does (``check_files`` of the pipeline
core), then checks the broken variants of :mod:`bench.broken_assets` of some of them. It prints one
table of the measures and problems of the good assets (a grey product's is broken with these
weights: they read its grey as background), one of the broken assets, and one JSON line. The
thresholds of ``client_worker.pipeline.quality_check`` were set on these tables
(docs/quality-check.md); run it with ``--checkpoint`` on the official weights before relying on
``QUALITY_CHECK=strict``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from asset.real_size import RealSize
from bench.broken_assets import broken_assets, slab, whole_frame_cut_out
from bench.photos import drawn_photos
from bench.pipeline import portable_repository
from bench.real_photos import real_photos
from bench.weights import generated_weights
from client_worker.pipeline.inference import TritonMeshClient
from client_worker.pipeline.photo_to_asset import QUALITY_TIMING, check_files, write_files
from client_worker.pipeline.presets import PRESETS, Preset
from client_worker.pipeline.quality_check import QualityMeasures, measure_quality
from export.build import model_shapes
from export.u2net_wheel import fetch_u2netp
from local_triton import LocalTriton
from triposr.checkpoint import load_tsr

SIZE = RealSize(0.3)
BROKEN_PHOTOS = ("boot", "lamp", "sofa", "coffee")
"""The photos whose assets are also broken on purpose: the drawn ones (asymmetric in outline and
colour) and a real one."""


def photo_set() -> dict[str, tuple[bytes, str]]:
    """Every photo the bench meshes: its encoded file and what is expected of its asset."""
    photos = {photo.name: (photo.encoded(), "good") for photo in drawn_photos()}
    photos.update({photo.name: (photo.make(), "grey product" if photo.grey else "good")
                   for photo in real_photos() if photo.usable})
    return photos


Rows = list[dict[str, Any]]


async def measure(url: str, presets: list[Preset], names: list[str]) -> tuple[Rows, Rows]:
    """The rows of the good assets' table and of the broken assets' table."""
    client = TritonMeshClient(url)
    photos = photo_set()
    good, broken = [], []
    try:
        for preset in presets:
            parameters = {"resolution": preset.resolution, "target_faces": preset.target_faces,
                          "texture_size": preset.texture_size}
            for name in names:
                data, expected = photos[name]
                mesh = await client.image_to_mesh(data, **parameters)
                timings: dict[str, float] = {}
                _, files = write_files(mesh, preset, SIZE, timings)
                measures, unchecked = check_files(mesh, files, timings)
                if measures is None:
                    raise RuntimeError(f"{name} at {preset.name} was not checked: {unchecked}")
                good.append(_row(preset, name, measures, expected=expected, check_ms=timings[QUALITY_TIMING],
                                 glb_ms=timings["model"]))
                if name not in BROKEN_PHOTOS:
                    continue
                slab_mesh = await client.image_to_mesh(whole_frame_cut_out(data), **parameters)
                for asset in [*broken_assets(mesh, preset, SIZE), slab(slab_mesh, preset, SIZE)]:
                    found = measure_quality(asset.glb, mesh.framed_photo, asset.world_low, asset.world_high)
                    broken.append(_row(preset, name, found, broken=asset.name))
    finally:
        await client.close()
    return good, broken


def _row(preset: Preset, photo: str, measures: QualityMeasures, **extra: Any) -> dict[str, Any]:
    return {"preset": preset.name, "photo": photo, **extra, "measures": measures.to_dict(),
            "problems": [problem.code for problem in measures.problems]}


def _cells(row: dict[str, Any]) -> str:
    m = row["measures"]
    colour = "–" if m["colour_difference"] is None else f"{m['colour_difference']:.1f}"
    return (f"{m['silhouette_iou']:.3f} | {m['mirrored_iou']:.3f} | {m['flipped_iou']:.3f} | "
            f"{m['outline_covered']:.3f} | {m['outline_excess']:.3f} | {colour} | {m['parts']} | {m['loose_parts']} | "
            f"{m['loose_share']:.4f} | {m['open_edges']:.3f} | {', '.join(row['problems']) or 'none'}")


MEASURE_HEADER = ("IoU | mirrored IoU | flipped IoU | covered | excess | colour (/255) | parts | loose | loose share | "
                  "open edges | problems")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "small"], default="small", help="of the silhouette weights")
    parser.add_argument("--checkpoint", type=Path,
                        help="a TripoSR checkpoint folder (config.yaml, model.ckpt) instead of the silhouette weights")
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--photos", nargs="+", help="photo names (default: the drawn and the usable real photos)")
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)

    names = args.photos or list(photo_set())
    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or generated_weights(args.cache, args.size, "silhouette")
    repository = portable_repository(args.cache, checkpoint, fetch_u2netp(), model_shapes(load_tsr(str(checkpoint))))
    with LocalTriton(repository) as server:
        good, broken = asyncio.run(measure(server.grpc_url, [PRESETS[name] for name in args.presets], names))

    weights = str(args.checkpoint) if args.checkpoint else f"{args.size} silhouette weights (a grey product's asset has holes)"
    print(f"\n{weights}: good assets\n")
    print(f"| preset | photo | expected | {MEASURE_HEADER} | check (ms) | GLB write (ms) |")
    print("|---|---|---|" + "---:|" * 10 + "---|---:|---:|")
    for row in good:
        print(f"| {row['preset']} | {row['photo']} | {row['expected']} | {_cells(row)} | {row['check_ms']:.0f} | "
              f"{row['glb_ms']:.0f} |")
    print("\nbroken assets\n")
    print(f"| preset | photo | broken | {MEASURE_HEADER} |")
    print("|---|---|---|" + "---:|" * 10 + "---|")
    for row in broken:
        print(f"| {row['preset']} | {row['photo']} | {row['broken']} | {_cells(row)} |")
    print(json.dumps({"weights": str(checkpoint), "good": good, "broken": broken}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
