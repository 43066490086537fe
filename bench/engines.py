"""Benchmark: the TripoSR encoder and decoder on each CPU engine, against torch eager fp32, one process.

    python -m bench.engines                       # official size, random weights in the official layout
    python -m bench.engines --size tiny --rounds 2
    python -m bench.engines --json                # also one JSON line with every figure

Both networks are exported once (``export.triposr_onnx``, the exporter's own code) from the same
weights, then timed in alternating rounds (every engine once per round, the order rotating), so a
machine that gets busier during the run slows every engine alike; the table gives medians and each
engine's speed relative to torch eager fp32 measured in the same rounds. Random weights make every
operation matter, so ``max rel`` (the largest absolute difference over the largest eager value)
is a real parity figure; the fp32 engines must stay within 1e-4. ``bf16`` rows are OpenVINO's
bfloat16 mode, which is opt-in only (docs/architecture.md) and reported for the record.

The encoder is almost all matrix products, so it also gets an fp32 ceiling: its floating-point
operations (counted by torch's FlopCounterMode, attention included) over the rate of one plain fp32
matrix product of its own shape on this machine, timed in the same run. No fp32 engine can beat
torch by more than that ratio here; bf16 can, because the CPU multiplies bf16 faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.weights import generated_weights
from img2mesh.contract import DECODER_CHUNK_POINTS, DENSITY, ENCODER_IMAGE, POINTS, SCENE_CODES
from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.openvino_models import openvino_model

PARITY_LIMIT = 1e-4
# The backbone's linear layers: 3 × 32² triplane tokens of width 1024 (the official config).
GEMM_SHAPE = (3072, 1024, 1024)

Run = Callable[[], np.ndarray]


def _graphs(model: torch.nn.Module, folder: Path) -> tuple[Path, Path]:
    from export.triposr_onnx import export_decoder, export_encoder

    folder.mkdir(parents=True, exist_ok=True)
    encoder, decoder = folder / "encoder.onnx", folder / "decoder.onnx"
    if not encoder.exists():
        print(f"[bench] exporting the encoder and decoder to {folder}")
        export_encoder(model, encoder)
        export_decoder(model, decoder)
    return encoder, decoder


def _rounds(runs: dict[str, Run], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per engine: one warm-up each, then ``rounds`` rounds in a rotating order."""
    for run in runs.values():
        run()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            started = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def _max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-30))


def _network(title: str, runs: dict[str, Run], rounds: int) -> dict[str, dict[str, float]]:
    """Time the engines of one network and print its table; parity is against the ``torch`` run."""
    reference = runs["torch"]()
    parity = {name: _max_rel(run(), reference) for name, run in runs.items()}
    times = _rounds(runs, rounds)
    eager = statistics.median(times["torch"])
    rows = {}
    print(f"\n{title}\n\n| engine | median ms | speed vs torch eager | max rel vs eager |\n|---|---:|---:|---:|")
    for name in runs:
        median = statistics.median(times[name])
        rows[name] = {"ms": round(median, 1), "speedup": round(eager / median, 3), "max_rel": parity[name]}
        print(f"| {name} | {median:,.0f} | {eager / median:.2f}× | {parity[name]:.1e} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "tiny"], default="official")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up (median reported)")
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    parser.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    args = parser.parse_args()

    from triposr.checkpoint import load_tsr

    model = load_tsr(str(generated_weights(args.cache, args.size, "random"))).eval()
    encoder_path, decoder_path = _graphs(model, args.cache / f"engines-{args.size}")
    threads = os.cpu_count() or 1
    generator = torch.Generator().manual_seed(1)
    size = model.config.cond_image_size
    image = torch.rand(1, 3, size, size, generator=generator)
    points = (torch.rand(1, DECODER_CHUNK_POINTS, 3, generator=generator) * 2 - 1) * model.radius

    with torch.no_grad():
        codes = model.encode(image)
        engines = {
            "onnxruntime": onnxruntime_session(encoder_path),
            "onnxruntime tuned": onnxruntime_session(encoder_path, threads=threads),
            "openvino f32": openvino_model(encoder_path),
            "openvino bf16 (opt-in)": openvino_model(encoder_path, precision="bf16"),
        }
        encoder_runs: dict[str, Run] = {"torch": lambda: model.encode(image).numpy()}
        feed = {ENCODER_IMAGE: image.numpy()}
        for name, engine in engines.items():
            encoder_runs[name] = _encoder_run(engine, feed)
        encoder = _network(f"Encoder, {args.size} size, image 1×3×{size}×{size}, {threads} threads", encoder_runs,
                           args.rounds)
        ceiling = _encoder_ceiling(model, image, encoder["torch"]["ms"], args.rounds)

        decoders = {
            "onnxruntime": onnxruntime_session(decoder_path),
            "onnxruntime tuned": onnxruntime_session(decoder_path, threads=threads),
            "openvino f32": openvino_model(decoder_path),
            "openvino bf16 (opt-in)": openvino_model(decoder_path, precision="bf16"),
        }
        decoder_runs: dict[str, Run] = {"torch": lambda: model.decode(codes, points)[0].numpy()}
        feed = {SCENE_CODES: codes.numpy(), POINTS: points.numpy()}
        for name, engine in decoders.items():
            decoder_runs[name] = _decoder_run(engine, feed)
        decoder = _network(f"Decoder, {DECODER_CHUNK_POINTS:,} points (one BLS chunk), density", decoder_runs,
                           args.rounds)

    fp32 = [name for name in engines if "bf16" not in name]
    for title, rows in (("encoder", encoder), ("decoder", decoder)):
        fastest = max(fp32, key=lambda name: rows[name]["speedup"])
        within = all(rows[name]["max_rel"] <= PARITY_LIMIT for name in fp32)
        print(f"\n{title}: fastest fp32 engine {fastest}, {rows[fastest]['speedup']:.2f}× torch eager; "
              f"every fp32 engine within {PARITY_LIMIT:g} of eager: {within}")
    print(f"encoder fp32 ceiling: {ceiling['gflop']:,.0f} GFLOP per image; torch eager reaches "
          f"{ceiling['torch_gflops']:,.0f} GFLOP/s, {ceiling['torch_share']:.0%} of this machine's plain fp32 matrix "
          f"product ({'×'.join(map(str, GEMM_SHAPE))}: {ceiling['gemm_gflops']:,.0f} GFLOP/s), so no fp32 engine can be "
          f"more than {ceiling['max_fp32_speedup']:.2f}× torch here")
    if args.json:
        print(json.dumps({"size": args.size, "threads": threads, "rounds": args.rounds,
                          "encoder": encoder, "decoder": decoder, "encoder_ceiling": ceiling}))
    return 0


def _encoder_ceiling(model: torch.nn.Module, image: torch.Tensor, torch_ms: float, rounds: int) -> dict[str, float]:
    """The encoder's GFLOP, torch's rate at ``torch_ms`` and a plain fp32 GEMM's rate, in GFLOP/s."""
    attention = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v)
    }
    counter = FlopCounterMode(display=False, custom_mapping=attention)
    with counter:
        model.encode(image)  # type: ignore[operator]
    flops = counter.get_total_flops()
    rows, inner, columns = GEMM_SHAPE
    left, right = torch.rand(rows, inner), torch.rand(inner, columns)
    repeats = max(1, int(flops / (2 * rows * inner * columns) / 10))  # about a tenth of the encoder's work
    seconds = []
    for _ in range(rounds + 1):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(left, right)
        seconds.append(time.perf_counter() - started)
    gemm = 2 * rows * inner * columns * repeats / statistics.median(seconds[1:]) / 1e9
    achieved = flops / (torch_ms / 1000) / 1e9
    # Four significant figures, not a fixed decimal: on a busy machine torch's rate can be a few
    # GFLOP/s, where rounding to 0.1 would already move their ratio by a couple of percent.
    return {"gflop": _figures(flops / 1e9), "torch_gflops": _figures(achieved), "gemm_gflops": _figures(gemm),
            "torch_share": round(achieved / gemm, 3), "max_fp32_speedup": round(gemm / achieved, 3)}


def _figures(value: float) -> float:
    return float(f"{value:.4g}")


def _encoder_run(engine: object, feed: dict[str, np.ndarray]) -> Run:
    if hasattr(engine, "run"):
        return lambda: engine.run([SCENE_CODES], feed)[0]  # type: ignore[attr-defined]
    return lambda: engine(feed)[SCENE_CODES]  # type: ignore[operator]


def _decoder_run(engine: object, feed: dict[str, np.ndarray]) -> Run:
    if hasattr(engine, "run"):
        return lambda: engine.run([DENSITY], feed)[0]  # type: ignore[attr-defined]
    return lambda: engine(feed)[DENSITY]  # type: ignore[operator]


if __name__ == "__main__":
    raise SystemExit(main())
