"""GPU benchmark, ready to run where there is an NVIDIA GPU and PyTorch (no Triton, no network needed).

    python -m bench.gpu                               # official size, analytic weights, 256³, CUDA
    python -m bench.gpu --dtypes fp32,bf16 --resolution 320 --json
    python -m bench.gpu --size tiny --device cpu      # the same code path without a GPU

It times, in one process and on the same synthetic condition image, the eager TripoSR encoder and
the narrow-band mesh extraction (the decoder on the device, marching cubes on the host) in each
precision, against the dense grid in fp32, and prints a table plus, with ``--json``, one JSON
line. Reduced precision runs the encoder under ``torch.autocast``; the decoder stays fp32, as in
every flavour of the repository: its ``exp`` density overflows fp16 and loses the surface in bf16
(docs/facts.md, "TripoSR mesh extraction"). Each mesh is compared with the fp32 dense one (faces,
Chamfer distance over the bounding-box diagonal): a reduced precision is only worth opting into
when its mesh stays within 0.5 %.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from bench.mesh_metrics import chamfer_relative
from bench.weights import generated_weights
from img2mesh.contract import DECODER_CHUNK_POINTS
from img2mesh.mesh_extraction import Surface, extract_surface, iter_chunks

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
THRESHOLD = 25.0


@contextlib.contextmanager
def _precision(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    if dtype == torch.float32:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_ms(run: Callable[[], object], device: torch.device, rounds: int) -> tuple[float, object]:
    """Median milliseconds of ``rounds`` runs after one warm-up, and the last result."""
    result = run()
    times = []
    for _ in range(rounds):
        _synchronize(device)
        started = time.perf_counter()
        result = run()
        _synchronize(device)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def _density_field(model: torch.nn.Module, codes: torch.Tensor, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    @torch.no_grad()
    def density_at(points: np.ndarray) -> np.ndarray:
        out = []
        for chunk in iter_chunks(points, DECODER_CHUNK_POINTS):
            density, _ = model.decode(codes, torch.from_numpy(np.ascontiguousarray(chunk)).to(device)[None])
            out.append(density[0, :, 0].cpu().numpy())
        return np.concatenate(out)

    return density_at


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "tiny"], default="official")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16", help="comma-separated, of: " + ", ".join(DTYPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from triposr.checkpoint import load_tsr

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --device cpu to try the script without a GPU")
    model = load_tsr(str(generated_weights(args.cache, args.size, "analytic"))).eval().to(device)
    size = model.config.cond_image_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"[bench] {args.size} TripoSR, analytic weights, {args.resolution}³, on {name}, torch {torch.__version__}")

    with torch.no_grad():
        codes32 = model.encode(image)
        dense_ms, dense = _timed_ms(
            lambda: extract_surface(_density_field(model, codes32, device), args.resolution, THRESHOLD,
                                    extraction="dense"), device, 1)
        rows = {}
        for label in args.dtypes.split(","):
            dtype = DTYPES[label]

            def encode(dtype: torch.dtype = dtype) -> torch.Tensor:
                with _precision(device, dtype):
                    return model.encode(image).float()

            encoder_ms, codes = _timed_ms(encode, device, args.rounds)
            band_ms, band = _timed_ms(
                lambda codes=codes: extract_surface(_density_field(model, codes, device), args.resolution, THRESHOLD),
                device, args.rounds)
            assert isinstance(band, Surface) and isinstance(dense, Surface)
            rows[label] = {
                "encoder_ms": round(encoder_ms, 1), "band_ms": round(band_ms, 1),
                "band_grid_ms": band.timings_ms["grid"], "band_marching_cubes_ms": band.timings_ms["marching_cubes"],
                "points": band.points_evaluated, "faces": int(len(band.faces)),
                "chamfer_vs_fp32_dense": chamfer_relative(dense.vertices, band.vertices),
            }

    print("\n| precision | encoder (ms) | band extraction (ms) | of which marching cubes (ms) | points | faces | "
          "Chamfer / diagonal vs fp32 dense |\n|---|---:|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['encoder_ms']:,.1f} | {row['band_ms']:,.1f} | {row['band_marching_cubes_ms']:,.1f} | "
              f"{row['points']:,} | {row['faces']:,} | {row['chamfer_vs_fp32_dense']:.2e} |")
    print(f"| fp32, dense grid | — | {dense_ms:,.1f} | {dense.timings_ms['marching_cubes']:,.1f} | "
          f"{dense.points_evaluated:,} | {len(dense.faces):,} | 0 |")
    if args.json:
        print(json.dumps({"device": name, "size": args.size, "resolution": args.resolution, "dense_ms": round(dense_ms, 1),
                          "dense_points": dense.points_evaluated, "faces_dense": int(len(dense.faces)), "precisions": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
