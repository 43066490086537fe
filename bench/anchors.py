"""The fastest equivalent libraries for each host step of a job, on the same inputs, for ``bench.postprocess --anchors``.

For each step that a library on the package index also does, this module holds our call and the
libraries' calls on the inputs of one job at a preset, and says when their output is
*equivalent* to ours (the figures are reported whether or not it is):

* **Meshes** (surface extraction, decimation): face count within ``FACE_TOLERANCE``, and the
  Chamfer and Hausdorff distances to our mesh (area samples of both, in grid cells) within
  ``CHAMFER_CELLS`` and ``HAUSDORFF_CELLS``. Each mesh's distance to the analytic surface it was
  made from is reported next to them.
* **Images** (the poster; the padded texture over what filtering reads of it, the covered texels
  and ``CHART_PADDING`` texels around them): PSNR to ours at least ``PSNR_DB``.
* **Encoded files** (texture and poster images, GLB): they decode to the same pixels (lossless) or
  to an image as close to the source (lossy, PSNR within ``LOSSY_PSNR_DB``), in at most
  ``BYTES_TOLERANCE`` times our bytes.

A step's anchor is its fastest equivalent candidate. Candidates whose library is not installed are
reported as such and skipped; ``pip install -e '.[bench]'`` installs those with wheels, and
``pip install meshoptimizer`` builds meshoptimizer's binding (an sdist only: a C++ compiler).
imagecodecs (libjpeg-turbo, zlib-ng PNG) was measured too and left out: it requires numpy 2, and it
was no faster than Pillow on these images.
Steps no library does on the same input are named in ``NO_ANCHOR`` with the reason.
"""

from __future__ import annotations

import importlib.util
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_cdt

from asset import glb, poster, usdz
from asset.material import JPEG_QUALITY, Material, TextureFormat
from asset.mesh_preparation import PreparedMesh, prepare_mesh
from bench.mesh_metrics import chamfer_hausdorff, surface_samples
from client_worker.pipeline.presets import Preset
from img2mesh import texture_baking
from img2mesh.atlas_rasterization import rasterize
from img2mesh.contract import THRESHOLD
from img2mesh.uv_unwrapping import CHART_PADDING
from img2mesh.mesh_extraction import DEFAULT_RADIUS, colors_to_uint8, extract_surface, grid_points

FACE_TOLERANCE = 0.02
"""Relative difference in face count within which two meshes of one step count as the same budget."""
CHAMFER_CELLS = 0.25
"""Largest Chamfer distance to our mesh, in grid cells, of an equivalent mesh: a quarter of the
smallest detail the grid holds."""
HAUSDORFF_CELLS = 1.0
"""Largest Hausdorff distance to our mesh, in grid cells, of an equivalent mesh: nothing moves by
more than the grid's own spacing."""
SAMPLES = 50_000
"""Area samples of each mesh whose distances to the other mesh give the Chamfer and Hausdorff distances."""
PSNR_DB = 40.0
"""Smallest PSNR to our image of an equivalent rendering (differences below a level of 255 on average)."""
LOSSY_PSNR_DB = 0.1
"""How much lower than ours a lossy encoding's PSNR to the source may be."""
BYTES_TOLERANCE = 1.10
"""How many times our bytes an equivalent encoding may take."""

NO_ANCHOR = {
    "unwrap": "no library projects charts along six axes; xatlas, the one on the index, was replaced "
              "(issue 17) for being 4× slower",
    "rasterize": "no CPU library rasterises a UV atlas to texel owners and barycentrics (nvdiffrast is CUDA only)",
    "texel_points": "one weighted sum of three corners per texel in numpy: no library step to compare",
    "bake_other": "array glue between the steps",
    "prepare": "welding seam vertices and angle-weighted normals (trimesh): no library does both",
    "quality": "the asset's check against its photo (GLB read back, front view, mesh health: docs/quality-check.md): "
               "no library measures the same; held to its own target, 40 ms per balanced job",
}


@dataclass
class Network:
    """Time spent in the analytic field (the network's share), taken out of the step that calls it."""

    cpu_ms: float = 0.0

    def field(self, function: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        def timed(points: np.ndarray) -> np.ndarray:
            started = time.process_time()
            try:
                return function(points)
            finally:
                self.cpu_ms += (time.process_time() - started) * 1000

        return timed


@dataclass(frozen=True)
class JobInputs:
    """The inputs of every anchored step of one job at a preset, made once before timing."""

    preset: Preset
    density: Callable[[np.ndarray], np.ndarray]
    distance: Callable[[np.ndarray], np.ndarray]
    dense: np.ndarray
    surface: tuple[np.ndarray, np.ndarray]
    unpadded: np.ndarray
    covered: np.ndarray
    prepared: PreparedMesh
    material: Material
    poster_rgba: np.ndarray

    @property
    def cell(self) -> float:
        return 2 * DEFAULT_RADIUS / (self.preset.resolution - 1)

    @classmethod
    def make(cls, preset: Preset, density: Callable, color: Callable, distance: Callable) -> JobInputs:
        resolution = preset.resolution
        dense = density(grid_points(resolution)).reshape((resolution,) * 3)
        surface = extract_surface(density, resolution, THRESHOLD.default)
        baked = texture_baking.bake(surface.vertices, surface.faces, color, target_faces=preset.target_faces,
                                    texture_size=preset.texture_size)
        owners, weights = rasterize(baked.uvs, baked.faces, preset.texture_size)
        flat, points = texture_baking.texel_points(baked.vertices, baked.faces, owners, weights)
        unpadded = np.zeros((preset.texture_size**2, 3), dtype=np.uint8)
        unpadded[flat] = colors_to_uint8(color(points))
        prepared = prepare_mesh(baked.vertices, baked.faces, colors_to_uint8(color(baked.vertices)),
                                uvs=baked.uvs, texture=baked.texture)
        rgba = np.asarray(Image.open(io.BytesIO(poster.render_poster(prepared))))
        return cls(preset, density, distance, dense, (surface.vertices, surface.faces),
                   unpadded.reshape(preset.texture_size, preset.texture_size, 3), owners >= 0, prepared,
                   Material(texture_format=preset.texture_format), rgba)


@dataclass(frozen=True)
class Candidate:
    """One way to do a step: ``run(inputs, network)`` returns its output; ``requires`` names the module
    it needs (skipped when missing)."""

    name: str
    run: Callable[[JobInputs, Network], Any]
    requires: str | None = None

    @property
    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


@dataclass(frozen=True)
class Anchored:
    """A step: our candidate, the libraries', and how an output is compared with ours."""

    step: str
    ours: Candidate
    anchors: tuple[Candidate, ...]
    compare: Callable[[JobInputs, Any, Any], dict[str, Any]]
    """``(inputs, ours, theirs) → figures``, with ``equivalent`` among them."""


# Meshes.

def _ours_surface(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    surface = extract_surface(network.field(inputs.density), inputs.preset.resolution, THRESHOLD.default)
    return surface.vertices, surface.faces


def _to_world(vertices: np.ndarray, resolution: int) -> np.ndarray:
    return (vertices / (resolution - 1) * (2 * DEFAULT_RADIUS) - DEFAULT_RADIUS).astype(np.float32)


def _flying_edges(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    resolution = inputs.preset.resolution
    image = vtkImageData()
    image.SetDimensions(resolution, resolution, resolution)
    # VTK's x varies fastest; our volume's last axis (z) does, so the axes are handed over reversed.
    image.GetPointData().SetScalars(numpy_to_vtk(inputs.dense.transpose(2, 1, 0).reshape(-1), deep=False))
    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, THRESHOLD.default)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    output = contour.GetOutput()
    vertices = vtk_to_numpy(output.GetPoints().GetData())
    faces = vtk_to_numpy(output.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return _to_world(vertices, resolution), faces.astype(np.int32)


def _lewiner_dense(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    vertices, faces, _, _ = marching_cubes(inputs.dense, THRESHOLD.default, allow_degenerate=False)
    return _to_world(vertices, inputs.preset.resolution), faces.astype(np.int32)


def _pymcubes(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    import mcubes

    vertices, faces = mcubes.marching_cubes(inputs.dense, THRESHOLD.default)
    return _to_world(vertices, inputs.preset.resolution), faces.astype(np.int32)


def _ours_decimate(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    return texture_baking.decimate(*inputs.surface, inputs.preset.target_faces)


def _pyfqmr(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    import pyfqmr

    simplifier = pyfqmr.Simplify()
    simplifier.setMesh(*inputs.surface)
    simplifier.simplify_mesh(target_count=inputs.preset.target_faces, preserve_border=False, verbose=False)
    vertices, faces, _ = simplifier.getMesh()
    return vertices, faces


def _meshoptimizer(inputs: JobInputs, network: Network) -> tuple[np.ndarray, np.ndarray]:
    import meshoptimizer

    vertices, faces = inputs.surface
    indices = faces.reshape(-1).astype(np.uint32)
    kept = np.zeros_like(indices)
    # An error bound of 1 (the whole mesh's extent) leaves the face budget as the only limit.
    count = meshoptimizer.simplify(kept, indices, vertices, target_index_count=3 * inputs.preset.target_faces,
                                   target_error=1.0)
    return vertices, kept[:count].reshape(-1, 3)


def _compare_meshes(inputs: JobInputs, ours: tuple[np.ndarray, np.ndarray],
                    theirs: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    chamfer, hausdorff = chamfer_hausdorff(ours, theirs, SAMPLES)
    ours_points, their_points = surface_samples(*ours, SAMPLES, seed=1), surface_samples(*theirs, SAMPLES, seed=2)
    faces = len(theirs[1]) / len(ours[1])
    figures = {
        "faces": int(len(theirs[1])), "faces_ratio": round(faces, 4),
        "chamfer_cells": round(chamfer / inputs.cell, 3), "hausdorff_cells": round(hausdorff / inputs.cell, 3),
        "ours_to_truth_cells": round(float(np.abs(inputs.distance(ours_points)).mean()) / inputs.cell, 4),
        "theirs_to_truth_cells": round(float(np.abs(inputs.distance(their_points)).mean()) / inputs.cell, 4),
    }
    figures["equivalent"] = bool(abs(faces - 1) <= FACE_TOLERANCE and chamfer <= CHAMFER_CELLS * inputs.cell
                                 and hausdorff <= HAUSDORFF_CELLS * inputs.cell)
    return figures


# Images.

def _ours_pad(inputs: JobInputs, network: Network) -> np.ndarray:
    return texture_baking.pad(inputs.unpadded, inputs.covered)


def _scipy_pad(inputs: JobInputs, network: Network) -> np.ndarray:
    """SciPy's taxicab distance transform with the nearest covered texel's indices, gathered as ours is."""
    rows, columns = distance_transform_cdt(~inputs.covered, metric="taxicab", return_distances=False,
                                           return_indices=True)
    nearest = (rows * inputs.covered.shape[1] + columns).reshape(-1)
    return inputs.unpadded.reshape(-1, 3).take(nearest, axis=0).reshape(inputs.unpadded.shape)


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """PSNR in dB of ``other`` to ``reference`` (uint8 images of one shape); infinite when they are equal."""
    error = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def _compare_images(inputs: JobInputs, ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    value = psnr(ours, theirs)
    return {"psnr_db": round(value, 2) if np.isfinite(value) else "inf", "equivalent": bool(value >= PSNR_DB)}


def _compare_padding(inputs: JobInputs, ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """PSNR over the texels that filtering reads: a texel midway between two charts may take either's
    colour (both are nearest), and nothing reads it."""
    read = distance_transform_cdt(~inputs.covered, metric="taxicab") <= CHART_PADDING
    return _compare_images(inputs, ours[read], theirs[read])


def _ours_poster(inputs: JobInputs, network: Network) -> np.ndarray:
    return _decoded(poster.render_poster(inputs.prepared))


def _vtk_poster(supersampling: int, multisamples: int = 0, fxaa: bool = False) -> Callable[[JobInputs, Network], Any]:
    """The poster's own VTK scene rendered another way: ``supersampling``× the size and averaged, with
    ``multisamples`` MSAA samples, or with FXAA; then PNG as the poster is."""
    from vtkmodules.vtkRenderingOpenGL2 import vtkOSOpenGLRenderWindow

    window = vtkOSOpenGLRenderWindow()
    window.SetOffScreenRendering(True)
    window.SetAlphaBitPlanes(True)
    window.SetMultiSamples(multisamples)

    def run(inputs: JobInputs, network: Network) -> np.ndarray:
        rgba = poster._render(inputs.prepared, poster.DEFAULT_SIZE * supersampling, poster.AZIMUTH_DEG,
                              poster.ELEVATION_DEG, window=window, fxaa=fxaa)
        return _decoded(poster.encode_png(np.asarray(Image.fromarray(rgba).reduce(supersampling))))

    return run


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# Encoded files.

@dataclass(frozen=True)
class Encoded:
    """An encoder's bytes and what they decode to."""

    data: bytes
    pixels: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, data: bytes) -> Encoded:
        return cls(data, _decoded(data))


def _texture(inputs: JobInputs) -> np.ndarray:
    assert inputs.prepared.texture is not None, "the bench's job is textured"
    return inputs.prepared.texture


def _ours_texture(inputs: JobInputs, network: Network) -> Encoded:
    return Encoded.of(inputs.material.encode_texture(_texture(inputs)))


def _simplejpeg(inputs: JobInputs, network: Network) -> Encoded:
    import simplejpeg

    return Encoded.of(simplejpeg.encode_jpeg(_texture(inputs), quality=JPEG_QUALITY, colorsubsampling="444"))


def _png(image: Callable[[JobInputs], np.ndarray], encoder: str) -> Callable[[JobInputs, Network], Encoded]:
    """A PNG of ``image(inputs)`` by ``encoder``: ``poster`` (``asset.poster.encode_png``), ``pillow-N``
    (Pillow, zlib level N, Pillow's default strategy for PNG) or ``fpng``."""

    def run(inputs: JobInputs, network: Network) -> Encoded:
        pixels = image(inputs)
        if encoder == "poster":
            return Encoded.of(poster.encode_png(pixels))
        if encoder.startswith("pillow-"):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG", compress_level=int(encoder.split("-")[1]))
            return Encoded.of(buffer.getvalue())
        import fpng

        return Encoded.of(fpng.from_ndarray(np.ascontiguousarray(pixels)))

    return run


def _texture_encoders(texture_format: TextureFormat) -> tuple[Candidate, ...]:
    if texture_format is TextureFormat.JPEG:
        return (Candidate("simplejpeg (libjpeg-turbo)", _simplejpeg, "simplejpeg"),)
    return _png_encoders(_texture, "pillow-6")


_PNG_ENCODERS = {"poster": ("Pillow PNG, zlib Z_RLE", None), "pillow-6": ("Pillow PNG, zlib level 6", None),
                 "pillow-1": ("Pillow PNG, zlib level 1", None), "fpng": ("fpng", "fpng")}


def _png_encoders(image: Callable[[JobInputs], np.ndarray], ours: str) -> tuple[Candidate, ...]:
    """Every PNG encoder of ``_PNG_ENCODERS`` but ``ours``."""
    return tuple(Candidate(name, _png(image, encoder), requires)
                 for encoder, (name, requires) in _PNG_ENCODERS.items() if encoder != ours)


def _compare_encoded(source: Callable[[JobInputs], np.ndarray]) -> Callable[[JobInputs, Encoded, Encoded], dict]:
    def compare(inputs: JobInputs, ours: Encoded, theirs: Encoded) -> dict[str, Any]:
        original = source(inputs)
        ours_psnr, their_psnr = psnr(original, ours.pixels), psnr(original, theirs.pixels)
        same = their_psnr == ours_psnr == float("inf") or their_psnr >= ours_psnr - LOSSY_PSNR_DB
        size = len(theirs.data) / len(ours.data)
        return {"bytes": len(theirs.data), "bytes_ratio": round(size, 3),
                "psnr_to_source_db": round(their_psnr, 2) if np.isfinite(their_psnr) else "inf",
                "equivalent": bool(same and size <= BYTES_TOLERANCE)}

    return compare


def _poster_pixels(inputs: JobInputs) -> np.ndarray:
    return inputs.poster_rgba


def _ours_glb(inputs: JobInputs, network: Network) -> Encoded:
    return Encoded(glb.write_glb(replace(inputs.prepared), inputs.material), np.zeros(0))


def _trimesh_glb(inputs: JobInputs, network: Network) -> Encoded:
    """The same GLB (positions, normals, UVs, indices, the texture and material) exported by trimesh."""
    import trimesh

    mesh, material = inputs.prepared, inputs.material
    assert mesh.uvs is not None
    pbr = trimesh.visual.material.PBRMaterial(name="product", baseColorFactor=[255, 255, 255, 255],
                                              metallicFactor=0.0, roughnessFactor=float(material.roughness),
                                              doubleSided=False)
    # trimesh keeps UVs with v up and flips them on export.
    visual = trimesh.visual.TextureVisuals(uv=np.column_stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]]), material=pbr)
    image = material.encode_texture(_texture(inputs))

    def add_texture(buffer_items: dict, tree: dict) -> None:
        tree["images"].append({"bufferView": len(buffer_items), "mimeType": material.texture_format.mime_type})
        buffer_items["base_color_texture"] = image + bytes(-len(image) % 4)
        tree["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        tree["textures"].append({"source": 0, "sampler": 0})
        tree["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}

    geometry = trimesh.Trimesh(mesh.positions, mesh.triangles, visual=visual, process=False, validate=False)
    geometry.vertex_normals = mesh.normals
    scene = trimesh.Scene()
    scene.add_geometry(geometry, geom_name="product", node_name="product")
    return Encoded(trimesh.exchange.gltf.export_glb(scene, include_normals=True, buffer_postprocessor=add_texture),
                   np.zeros(0))


def _compare_glb(inputs: JobInputs, ours: Encoded, theirs: Encoded) -> dict[str, Any]:
    mine, other = glb.glb_summary(ours.data), glb.glb_summary(theirs.data)
    same = all(mine[key] == other[key] for key in ("vertex_count", "face_count", "has_normals", "has_texture"))
    size = len(theirs.data) / len(ours.data)
    return {"bytes": len(theirs.data), "bytes_ratio": round(size, 3),
            "equivalent": bool(same and size <= BYTES_TOLERANCE)}


def _ours_usdz(inputs: JobInputs, network: Network) -> bytes:
    return usdz.write_usdz(replace(inputs.prepared), inputs.material)


def anchored_steps(preset: Preset) -> tuple[Anchored, ...]:
    """Every anchored step at ``preset``, ours first in each."""
    texture = _compare_encoded(_texture)
    return (
        Anchored("surface", Candidate("narrow band + scikit-image Lewiner (ours)", _ours_surface), (
            Candidate("VTK vtkFlyingEdges3D, dense grid", _flying_edges),
            Candidate("scikit-image Lewiner, dense grid", _lewiner_dense),
            Candidate("PyMCubes, dense grid", _pymcubes, "mcubes"),
        ), _compare_meshes),
        Anchored("decimate", Candidate("fast-simplification (ours)", _ours_decimate), (
            Candidate("pyfqmr", _pyfqmr, "pyfqmr"),
            Candidate("meshoptimizer simplify", _meshoptimizer, "meshoptimizer"),
        ), _compare_meshes),
        Anchored("pad", Candidate("OpenCV distanceTransformWithLabels, L1 (ours)", _ours_pad), (
            Candidate("SciPy taxicab distance transform", _scipy_pad),
        ), _compare_padding),
        Anchored("texture_encoding", Candidate(f"Pillow {preset.texture_format.value} (ours)", _ours_texture),
                 _texture_encoders(preset.texture_format), texture),
        Anchored("model", Candidate("pygltflib GLB (ours)", _ours_glb), (
            Candidate("trimesh GLB", _trimesh_glb),
        ), _compare_glb),
        Anchored("usdz", Candidate("usd-core (ours)", _ours_usdz), (), lambda inputs, ours, theirs: {}),
        Anchored("poster", Candidate("VTK OSMesa 2× supersampled (ours)", _ours_poster), (
            Candidate("VTK OSMesa 1×", _vtk_poster(1)),
            Candidate("VTK OSMesa 1× FXAA", _vtk_poster(1, fxaa=True)),
            Candidate("VTK OSMesa 1× MSAA 4", _vtk_poster(1, multisamples=4)),
        ), _compare_images),
        Anchored("poster_encoding", Candidate("Pillow PNG, zlib Z_RLE (ours)", _png(_poster_pixels, "poster")),
                 _png_encoders(_poster_pixels, "poster"), _compare_encoded(_poster_pixels)),
    )


def measure_anchors(inputs: JobInputs, rounds: int) -> dict[str, dict[str, Any]]:
    """Per anchored step: our median CPU ms and each candidate's, over ``rounds`` interleaved rounds
    (after a warm-up; the order turns each round), with its equivalence figures and the ratio of our
    time to its, and the step's anchor (the fastest equivalent candidate)."""
    report = {}
    for anchored in anchored_steps(inputs.preset):
        installed = [anchored.ours, *(c for c in anchored.anchors if c.installed)]
        times: dict[str, list[float]] = {c.name: [] for c in installed}
        outputs: dict[str, Any] = {}
        for round_ in range(rounds + 1):
            shift = round_ % len(installed)
            for candidate in installed[shift:] + installed[:shift]:
                network = Network()
                started = time.process_time()
                outputs[candidate.name] = candidate.run(inputs, network)
                if round_:
                    times[candidate.name].append((time.process_time() - started) * 1000 - network.cpu_ms)
        ours_ms = statistics.median(times[anchored.ours.name])
        candidates = []
        for candidate in anchored.anchors:
            row: dict[str, Any] = {"name": candidate.name}
            if not candidate.installed:
                row["installed"] = False
            else:
                cpu_ms = statistics.median(times[candidate.name])
                row.update(cpu_ms=round(cpu_ms, 1), ratio=round(ours_ms / cpu_ms, 2),
                           **anchored.compare(inputs, outputs[anchored.ours.name], outputs[candidate.name]))
            candidates.append(row)
        equivalent = [row for row in candidates if row.get("equivalent")]
        anchor = min(equivalent, key=lambda row: row["cpu_ms"]) if equivalent else None
        report[anchored.step] = {
            "ours": anchored.ours.name, "ours_cpu_ms": round(ours_ms, 1), "candidates": candidates,
            "anchor": anchor["name"] if anchor else None,
            "anchor_cpu_ms": anchor["cpu_ms"] if anchor else None,
            "ratio": anchor["ratio"] if anchor else None,
        }
    return report
