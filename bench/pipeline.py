"""Benchmark: eager PyTorch reference vs the Triton ensemble, per stage, same input, one process.

    python -m bench.pipeline                      # full-size TripoSR, analytic weights, 256³
    python -m bench.pipeline --size tiny --resolution 64 --runs 2
    python -m bench.pipeline --kind random        # random weights (noisy field, many more faces)

Both paths run the official architecture on the same synthetic product photo, with weights
generated once into ``--cache`` in the official checkpoint layout. The default ``analytic``
weights cost exactly the same compute as real ones (same shapes, dense layers) but give a real
closed surface, so marching cubes and the colour query see a realistic face count; ``random``
weights give a noisy field whose surface is meshed at the 70th percentile of the density. The Triton side is the
portable repository on the local ``tritonserver`` (ONNX Runtime inside Python-backend models,
CPU); its stage times come from Triton's statistics API (per-model compute time) and from the
mesher's own timings. Background removal uses the generated U²-Net stand-in unless ``--u2net``
names rembg's real ``u2net.onnx``; its time is then not U²-Net's and the table says so.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from export.u2net_synthetic import synthetic_product_photo, write_u2net_like
from img2mesh.contract import (
    ENCODER,
    ENSEMBLE,
    FOREGROUND,
    IMAGE,
    IMAGE_PREPROCESS,
    MESH_INFO,
    REMBG,
)
from img2mesh.parameters import MeshParameters
from local_triton import LocalTriton

STAGES = ("preprocessing", "encoder", "grid", "marching_cubes", "colors", "end_to_end")
BACKGROUND_MODELS = (IMAGE_PREPROCESS, REMBG, FOREGROUND)


def _weights(cache: Path, size: str, kind: str) -> Path:
    from triposr.synthetic import write_checkpoint

    target = cache / f"triposr-{size}-{kind}"
    if not (target / "model.ckpt").exists():
        print(f"[bench] generating {size} {kind} weights in the official layout into {target}")
        write_checkpoint(target, size=size, kind=kind, seed=0)
    return target


def _repository(cache: Path, checkpoint: Path, u2net: Path, stand_in: bool) -> Path:
    from export.build import build_repository

    target = cache / f"repository-{checkpoint.name}-{'standin' if stand_in else 'u2net'}"
    if not (target / ENCODER).is_dir():
        build_repository(str(checkpoint), target, flavour="portable", u2net=str(u2net), verify_u2net_checksum=not stand_in)
    return target


def _compute_ms(client: grpcclient.InferenceServerClient) -> dict[str, float]:
    """Total compute time so far per model, from Triton's statistics API."""
    stats = client.get_inference_statistics(as_json=True)
    totals: dict[str, float] = {}
    for model in stats.get("model_stats", []):
        infer = model.get("inference_stats", {})
        nanoseconds = sum(int(infer.get(part, {}).get("ns", 0)) for part in ("compute_input", "compute_infer", "compute_output"))
        totals[model["name"]] = totals.get(model["name"], 0.0) + nanoseconds / 1e6
    return totals


def _triton_run(client: grpcclient.InferenceServerClient, image: bytes, parameters: MeshParameters) -> dict[str, float]:
    before = _compute_ms(client)
    tensor = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
    started = time.perf_counter()
    result = client.infer(
        ENSEMBLE,
        [tensor],
        parameters={"resolution": parameters.resolution, "threshold": parameters.threshold},
        client_timeout=3600,
    )
    end_to_end = (time.perf_counter() - started) * 1000.0
    after = _compute_ms(client)
    info = json.loads(result.as_numpy(MESH_INFO).reshape(-1)[0])
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    return {
        "preprocessing": sum(spent.get(name, 0.0) for name in BACKGROUND_MODELS),
        "encoder": spent.get(ENCODER, 0.0),
        **{name: float(info["timings_ms"][name]) for name in ("grid", "marching_cubes", "colors")},
        "end_to_end": end_to_end,
        "faces": float(info["face_count"]),
    }


def _eager_run(pipeline: object, image: bytes, parameters: MeshParameters) -> dict[str, float]:
    started = time.perf_counter()
    mesh = pipeline.run(image, parameters)  # type: ignore[attr-defined]
    end_to_end = (time.perf_counter() - started) * 1000.0
    timings = mesh.timings_ms
    return {
        "preprocessing": timings["preprocessing"],
        "encoder": timings["encoder"],
        "grid": timings["grid"],
        "marching_cubes": timings["marching_cubes"],
        "colors": timings["colors"],
        "end_to_end": end_to_end,
        "faces": float(len(mesh.faces)),
    }


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "tiny"], default="official")
    parser.add_argument("--kind", choices=["analytic", "random"], default="analytic")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threshold", type=float, help="iso level (default: 25.0 for analytic weights, the 70th "
                        "percentile of the field for random ones, which have no surface at 25.0)")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per path after one warm-up (median reported)")
    parser.add_argument("--u2net", type=Path, help="rembg's real u2net.onnx (default: the generated stand-in)")
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    args = parser.parse_args()

    from triposr.checkpoint import load_tsr
    from triposr.reference import ReferencePipeline

    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = _weights(args.cache, args.size, args.kind)
    stand_in = args.u2net is None
    u2net = args.u2net or write_u2net_like(args.cache / "u2net-standin.onnx")
    repository = _repository(args.cache, checkpoint, u2net, stand_in)
    buffer = io.BytesIO()
    synthetic_product_photo(size=(1024, 768)).save(buffer, "JPEG", quality=92)
    image = buffer.getvalue()

    reference = ReferencePipeline(load_tsr(str(checkpoint)), u2net)
    threshold = args.threshold or (MeshParameters().threshold if args.kind == "analytic" else None)
    if threshold is None:
        threshold = reference.density_quantile(image, args.resolution, 0.7)
    parameters = MeshParameters(resolution=args.resolution, threshold=threshold)

    print(f"[bench] eager reference: {args.size} TripoSR ({args.kind} weights), {args.resolution}³, threshold {threshold:.4g}, chunk {reference.chunk_size}")
    eager = [_eager_run(reference, image, parameters) for _ in range(args.runs + 1)][1:]
    eager_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("[bench] Triton: starting the local tritonserver on the portable repository")
    with LocalTriton(repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        triton = [_triton_run(client, image, parameters) for _ in range(args.runs + 1)][1:]

    label = "decode + background removal + framing" + (" (stand-in U²-Net)" if stand_in else "")
    print("\n| stage | eager PyTorch (ms) | Triton (ms) | Triton / eager |")
    print("|---|---:|---:|---:|")
    for stage in STAGES:
        e, t = _median(eager, stage), _median(triton, stage)
        name = label if stage == "preprocessing" else stage.replace("_", " ")
        print(f"| {name} | {e:,.0f} | {t:,.0f} | {t / e:.2f} |")
    print(f"\nfaces: eager {_median(eager, 'faces'):.0f}, Triton {_median(triton, 'faces'):.0f}; "
          f"peak RSS of this process (eager side): {eager_rss:,.0f} MiB; runs: {args.runs} (median), after one warm-up each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
