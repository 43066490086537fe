"""Benchmark: the dense eager reference (TripoSR's own settings) against the Triton path, per stage.

    python -m bench.pipeline                          # official size, analytic weights, 256³, balanced GLB
    python -m bench.pipeline --size tiny --resolution 128
    python -m bench.pipeline --kind random --json     # noise field; one JSON line at the end

Both paths run the same synthetic product photo through the official architecture, with weights
generated once into ``--cache`` in the official checkpoint layout:

* **reference**: eager PyTorch fp32, the dense grid (every R³ point, chunks of 8192 points as
  TripoSR's ``run.py``), TripoSR's mesh extraction, then the worker's GLB writer;
* **Triton**: the portable repository on the local ``tritonserver`` (the narrow band, each network
  on the CPU engine the exporter chose) at the ``balanced`` preset: the mesher decimates to its
  triangle budget and bakes its texture; then the worker's GLB writer.

The default ``analytic`` weights cost exactly the compute of real ones (same shapes, dense layers)
and give a closed surface, the case the band is for; ``random`` weights give a noise field, whose
surface is everywhere (that tests safety, not speed). Triton's stage times come from its statistics
API (per-model compute) and the mesher's own timings; decoder points and face counts from both; the
Chamfer distance is between the two meshes, over the reference's bounding-box diagonal. Then the
Triton path runs several jobs at once to report jobs per minute at 1 and 4 concurrent jobs.

The same server also answers the photo check (``photo_check``: decoding, U²-Net and the mask's
measures, docs/photo-check.md) on the same photo: what each candidate photo of a job costs, as a
share of the mesh ensemble's request measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from asset.glb import write_glb
from asset.material import Material
from asset.mesh_preparation import prepare_mesh
from bench.mesh_metrics import chamfer_relative
from bench.weights import generated_weights
from client_worker.pipeline.presets import PRESETS
from export.build import model_shapes
from export.repository import refresh_code
from export.u2net_synthetic import synthetic_product_photo
from export.u2net_wheel import fetch_u2netp
from img2mesh.contract import (
    ENCODER,
    ENSEMBLE,
    FACES,
    FOREGROUND,
    IMAGE,
    IMAGE_PREPROCESS,
    MESH_INFO,
    PHOTO_CHECK,
    PHOTO_MEASURES,
    REMBG,
    TEXTURE,
    UVS,
    VERTEX_COLORS,
    VERTICES,
    Shapes,
)
from img2mesh.parameters import MeshParameters
from local_triton import LocalTriton

STAGES = ("background_removal", "encoder", "grid", "marching_cubes", "texture", "colors", "glb")
# The stages both paths run after the encoder; texture baking is Triton's alone and reported apart.
AFTER_ENCODER = ("grid", "marching_cubes", "colors", "glb")
BACKGROUND_MODELS = (IMAGE_PREPROCESS, REMBG, FOREGROUND)
GLB_PRESET = PRESETS["balanced"]


def portable_repository(cache: Path, checkpoint: Path, u2net: Path, shapes: Shapes) -> Path:
    """The portable repository of ``checkpoint`` and ``u2net`` (one of rembg's published U²-Nets):
    exported once, its configs and code refreshed every run."""
    from export.build import build_repository

    target = cache / f"repository-{checkpoint.name}-{u2net.stem}"
    if not (target / ENCODER).is_dir():
        build_repository(str(checkpoint), target, flavour="portable", u2net=str(u2net))
    refresh_code(target, "portable", shapes)
    return target


def _glb_ms(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
            uvs: np.ndarray | None = None, texture: np.ndarray | None = None) -> float:
    """The worker's GLB stage: preparation (axes, placement, normals) and writing."""
    started = time.perf_counter()
    write_glb(prepare_mesh(vertices, faces, colors, uvs=uvs, texture=texture), Material(texture_format=GLB_PRESET.texture_format))
    return (time.perf_counter() - started) * 1000.0


def compute_ms(client: grpcclient.InferenceServerClient) -> dict[str, float]:
    """Total compute time so far per model, from Triton's statistics API."""
    stats = client.get_inference_statistics(as_json=True)
    totals: dict[str, float] = {}
    for model in stats.get("model_stats", []):
        infer = model.get("inference_stats", {})
        nanoseconds = sum(int(infer.get(part, {}).get("ns", 0)) for part in ("compute_input", "compute_infer", "compute_output"))
        totals[model["name"]] = totals.get(model["name"], 0.0) + nanoseconds / 1e6
    return totals


def _infer(client: grpcclient.InferenceServerClient, image: bytes, parameters: MeshParameters,
           baked: bool = True) -> grpcclient.InferResult:
    """One job; ``baked`` asks for the preset's decimation and texture, else the band mesh as extracted."""
    tensor = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
    extra = {"target_faces": GLB_PRESET.target_faces, "texture_size": GLB_PRESET.texture_size} if baked else {}
    return client.infer(
        ENSEMBLE, [tensor],
        parameters={"resolution": parameters.resolution, "threshold": parameters.threshold, **extra},
        client_timeout=3600,
    )


def _triton_run(client: grpcclient.InferenceServerClient, image: bytes, parameters: MeshParameters) -> dict:
    before = compute_ms(client)
    started = time.perf_counter()
    result = _infer(client, image, parameters)
    triton_ms = (time.perf_counter() - started) * 1000.0
    after = compute_ms(client)
    info = json.loads(result.as_numpy(MESH_INFO).reshape(-1)[0])
    vertices, faces = result.as_numpy(VERTICES)[0], result.as_numpy(FACES)[0]
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    ms = {
        "background_removal": sum(spent.get(name, 0.0) for name in BACKGROUND_MODELS),
        "encoder": spent.get(ENCODER, 0.0),
        **{name: float(info["timings_ms"][name]) for name in ("grid", "marching_cubes", "texture", "colors")},
        "glb": _glb_ms(vertices, faces, result.as_numpy(VERTEX_COLORS)[0], result.as_numpy(UVS)[0],
                       result.as_numpy(TEXTURE)[0]),
    }
    ms["total"] = triton_ms + ms["glb"]
    return {"ms": ms, "request_ms": triton_ms, "points": int(info["points_evaluated"]), "faces": int(info["face_count"]),
            "surface_faces": int(info["surface_face_count"])}


def _photo_check_ms(client: grpcclient.InferenceServerClient, image: bytes) -> float:
    """One candidate's photo check, as the worker sends it: the request's wall time."""
    tensor = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
    started = time.perf_counter()
    client.infer(PHOTO_CHECK, [tensor], outputs=[grpcclient.InferRequestedOutput(PHOTO_MEASURES)], client_timeout=600)
    return (time.perf_counter() - started) * 1000.0


def _reference_run(pipeline: object, image: bytes, parameters: MeshParameters) -> dict:
    started = time.perf_counter()
    mesh = pipeline.run(image, parameters)  # type: ignore[attr-defined]
    ms = {"background_removal": mesh.timings_ms["preprocessing"],
          **{name: mesh.timings_ms[name] for name in ("encoder", "grid", "marching_cubes", "colors")},
          "texture": 0.0, "glb": _glb_ms(mesh.vertices, mesh.faces, mesh.vertex_colors)}
    ms["total"] = (time.perf_counter() - started) * 1000.0 + ms["glb"]
    return {"ms": ms, "points": mesh.points_evaluated, "faces": int(len(mesh.faces)),
            "surface_faces": int(len(mesh.faces)), "vertices": mesh.vertices}


def _jobs_per_minute(grpc_url: str, image: bytes, parameters: MeshParameters, concurrency: int, jobs: int) -> float:
    """Jobs per minute when ``concurrency`` clients each send their share of ``jobs`` one after another."""
    errors: list[BaseException] = []

    def client_loop(count: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            for _ in range(count):
                _infer(client, image, parameters)
        except BaseException as error:  # reported below: a failed job must not count as done
            errors.append(error)

    shares = [jobs // concurrency + (1 if index < jobs % concurrency else 0) for index in range(concurrency)]
    threads = [threading.Thread(target=client_loop, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return jobs / ((time.perf_counter() - started) / 60.0)


def _median(runs: list[dict], stage: str) -> float:
    return statistics.median(run["ms"][stage] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["official", "tiny"], default="official")
    parser.add_argument("--kind", choices=["analytic", "random"], default="analytic")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threshold", type=float, help="iso level (default: 25.0 for analytic weights, a level "
                        "near the field's 70th percentile for random ones, which have no surface at 25.0)")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per path after one warm-up (median reported)")
    parser.add_argument("--concurrency-jobs", type=int, default=4,
                        help="jobs sent at each concurrency (1 and 4) for jobs per minute; 0 skips that part")
    parser.add_argument("--u2net", type=Path, help="one of rembg's U²-Net files, e.g. the full u2net.onnx "
                        "(default: rembg's u2netp, from the package index)")
    parser.add_argument("--cache", type=Path, default=Path("build/bench"))
    parser.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    args = parser.parse_args()

    from triposr.checkpoint import load_tsr
    from triposr.reference import ReferencePipeline

    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = generated_weights(args.cache, args.size, args.kind)
    u2net = args.u2net or fetch_u2netp()
    model = load_tsr(str(checkpoint))
    repository = portable_repository(args.cache, checkpoint, u2net, model_shapes(model))
    buffer = io.BytesIO()
    synthetic_product_photo(size=(1024, 768)).save(buffer, "JPEG", quality=92)
    image = buffer.getvalue()

    reference = ReferencePipeline(model, u2net, extraction="dense")
    threshold = args.threshold or (MeshParameters().threshold if args.kind == "analytic" else None)
    if threshold is None:
        threshold = reference.density_quantile(image, args.resolution, 0.7)
    parameters = MeshParameters(resolution=args.resolution, threshold=threshold)

    print(f"[bench] reference: {args.size} TripoSR ({args.kind} weights), eager fp32, dense {args.resolution}³ grid, "
          f"threshold {threshold:.4g}, chunks of {reference.chunk_size}")
    dense = [_reference_run(reference, image, parameters) for _ in range(args.runs + 1)][1:]

    print("[bench] Triton: the portable repository on the local tritonserver")
    with LocalTriton(repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        band = [_triton_run(client, image, parameters) for _ in range(args.runs + 1)][1:]
        band_vertices = _infer(client, image, parameters, baked=False).as_numpy(VERTICES)[0]
        checks = [_photo_check_ms(client, image) for _ in range(args.runs + 1)][1:]
        per_minute = {}
        if args.concurrency_jobs:
            for concurrency in (1, 4):
                per_minute[concurrency] = _jobs_per_minute(
                    server.grpc_url, image, parameters, concurrency, max(args.concurrency_jobs, concurrency)
                )

    label = f"background removal + framing ({u2net.stem})"
    print("\n| stage | reference: eager, dense (ms) | Triton: band (ms) | reference / Triton |")
    print("|---|---:|---:|---:|")
    photo_check_ms = statistics.median(checks)
    mesh_request_ms = statistics.median(run["request_ms"] for run in band)
    print(f"| photo check of one candidate ({PHOTO_CHECK}: decoding, {u2net.stem}, measures) | — | {photo_check_ms:,.0f} | — |")
    for stage in (*STAGES, "total"):
        r, t = _median(dense, stage), _median(band, stage)
        name = {"background_removal": label, "glb": "GLB (prepare + write)",
                "texture": f"decimation + texture baking ({GLB_PRESET.name}: {GLB_PRESET.target_faces:,} faces, "
                           f"{GLB_PRESET.texture_size}²)",
                "total": "end to end"}.get(stage, stage.replace("_", " "))
        ratio = f"{r / t:.2f}×" if r and t else "—"
        print(f"| {name} | {r:,.0f} | {t:,.0f} | {ratio} |")

    after_reference = sum(_median(dense, stage) for stage in AFTER_ENCODER)
    after_triton = sum(_median(band, stage) for stage in AFTER_ENCODER)
    dense_points, band_points = dense[0]["points"], band[0]["points"]
    chamfer = chamfer_relative(dense[0]["vertices"], band_vertices)
    texture_share = _median(band, "texture") / _median(band, "total")
    triton_encoder = _median(band, "encoder")
    print(f"\nafter the encoder (grid, marching cubes, colours, GLB): reference {after_reference:,.0f} ms, "
          f"Triton {after_triton:,.0f} ms: {after_reference / after_triton:.1f}× faster")
    print(f"decoder grid points: dense {dense_points:,}, band {band_points:,}: {dense_points / band_points:.1f}× fewer")
    print(f"faces: dense {dense[0]['faces']:,}, band {band[0]['surface_faces']:,} before decimation "
          f"({band[0]['faces']:,} after); Chamfer / diagonal, band vs dense {chamfer:.2e}")
    print(f"texture baking: {texture_share:.1%} of the Triton job")
    print(f"Triton end to end / its encoder: {_median(band, 'total') / triton_encoder:.2f}; "
          f"encoder: eager {_median(dense, 'encoder'):,.0f} ms, Triton {triton_encoder:,.0f} ms "
          f"({_median(dense, 'encoder') / triton_encoder:.2f}× faster)")
    print(f"a candidate's photo check / the mesh ensemble's request: {photo_check_ms:,.0f} / {mesh_request_ms:,.0f} ms "
          f"= {photo_check_ms / mesh_request_ms:.3f}")
    for concurrency, rate in per_minute.items():
        print(f"jobs per minute with {concurrency} in flight: {rate:.2f}")
    if args.json:
        print(json.dumps({
            "size": args.size, "kind": args.kind, "u2net": u2net.stem, "resolution": args.resolution, "threshold": threshold,
            "dense_points": dense_points, "band_points": band_points, "chamfer_rel": chamfer,
            "faces_dense": dense[0]["faces"], "faces_band": band[0]["surface_faces"],
            "faces_decimated": band[0]["faces"], "texture_share": round(texture_share, 4),
            "reference_ms": {stage: round(_median(dense, stage), 1) for stage in (*STAGES, "total")},
            "triton_ms": {stage: round(_median(band, stage), 1) for stage in (*STAGES, "total")},
            "photo_check_ms": round(photo_check_ms, 1), "mesh_request_ms": round(mesh_request_ms, 1),
            "photo_check_ratio": round(photo_check_ms / mesh_request_ms, 4),
            "jobs_per_minute": {str(concurrency): round(rate, 2) for concurrency, rate in per_minute.items()},
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
