"""The eager reference pipeline: image bytes → coloured mesh in one process, no Triton.

It runs the same img2mesh steps as the Triton models (decoding, rembg's pre/post-processing,
framing, mesh extraction) around the PyTorch model and an onnxruntime session of rembg's own
``u2net.onnx``, with the official settings (256³ grid, decoder chunks of 8192 points). The mesh
extraction is the mesher's (``band`` by default; ``dense`` is TripoSR's own full grid). Tests use
it as the ground truth for the Triton ensemble, and the benchmark as the speed reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from img2mesh.background_removal import foreground_rgba, u2net_input
from img2mesh.framing import condition_image
from img2mesh.image_decoding import decode_image
from img2mesh.mesh_extraction import (
    DEFAULT_EXTRACTION,
    DensityField,
    colors_to_uint8,
    extract_surface,
    grid_points,
    iter_chunks,
)
from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.parameters import MeshParameters
from triposr.system import TSR

OFFICIAL_CHUNK_SIZE = 8192


@dataclass
class Mesh:
    """A mesh in the TripoSR world frame (Z up, front +X; see docs/architecture.md)."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray
    points_evaluated: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self) -> None:
        self.timings_ms: dict[str, float] = {}

    def lap(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.timings_ms[name] = round((now - started) * 1000.0, 2)
        return now


class ReferencePipeline:
    """``run(image_bytes, parameters)`` → :class:`Mesh`, timing each stage."""

    def __init__(
        self, model: TSR, u2net_path: Path, *, chunk_size: int = OFFICIAL_CHUNK_SIZE, extraction: str = DEFAULT_EXTRACTION
    ) -> None:
        self.model = model.eval()
        self.chunk_size = chunk_size
        self.extraction = extraction
        self.u2net = onnxruntime_session(u2net_path)
        self._u2net_input_name = self.u2net.get_inputs()[0].name

    def condition(self, image: bytes, foreground_ratio: float) -> np.ndarray:
        """Image bytes → the 512² condition image: decode, remove the background, frame."""
        return condition_image(self.remove_background(decode_image(image)), foreground_ratio=foreground_ratio)

    def remove_background(self, rgba: np.ndarray) -> np.ndarray:
        prediction = self.u2net.run(None, {self._u2net_input_name: u2net_input(rgba)[None]})[0]
        return foreground_rgba(rgba, prediction[0])

    @torch.no_grad()
    def scene_codes(self, condition: np.ndarray) -> torch.Tensor:
        return self.model.encode(torch.from_numpy(condition)[None])

    @torch.no_grad()
    def query(self, scene_codes: torch.Tensor, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Density [N] and colour [N, 3] at ``points``, decoded chunk by chunk like the official code."""
        densities, colors = [], []
        for chunk in iter_chunks(points, self.chunk_size):
            density, color = self.model.decode(scene_codes, torch.from_numpy(np.ascontiguousarray(chunk))[None])
            densities.append(density[0, :, 0].numpy())
            colors.append(color[0].numpy())
        return np.concatenate(densities), np.concatenate(colors)

    def density_field(self, scene_codes: torch.Tensor) -> DensityField:
        """The decoder's density at any world points: what the mesh extraction asks for."""
        return lambda points: self.query(scene_codes, points)[0]

    def grid_density(self, scene_codes: torch.Tensor, resolution: int) -> np.ndarray:
        """Density [R³] at every grid point (:func:`grid_points`)."""
        return self.query(scene_codes, grid_points(resolution))[0]

    def density_quantile(self, image: bytes, resolution: int, quantile: float, foreground_ratio: float = 0.85) -> float:
        """An iso level near the grid density's ``quantile``: where random weights, which have no
        surface at the official 25.0, give one (parity tests and benchmarks use it).

        The level is the midpoint of the widest gap between neighbouring grid values around the
        quantile, never a value the grid nearly holds: a grid value within float32 noise of the
        level could fall on either side of it in two runtimes and change the mesh's topology.
        """
        codes = self.scene_codes(self.condition(image, foreground_ratio))
        return level_between_values(self.grid_density(codes, resolution), quantile)

    def run(self, image: bytes, parameters: MeshParameters | None = None) -> Mesh:
        parameters = parameters or MeshParameters()
        clock = _Stopwatch()
        started = time.perf_counter()
        condition = self.condition(image, parameters.foreground_ratio)
        started = clock.lap("preprocessing", started)
        codes = self.scene_codes(condition)
        started = clock.lap("encoder", started)
        surface = extract_surface(
            self.density_field(codes), parameters.resolution, parameters.threshold, extraction=self.extraction
        )
        clock.timings_ms.update(surface.timings_ms)
        started = time.perf_counter()
        _, colors = self.query(codes, surface.vertices)
        clock.lap("colors", started)
        return Mesh(surface.vertices, surface.faces, colors_to_uint8(colors), surface.points_evaluated, clock.timings_ms)


def level_between_values(values: np.ndarray, quantile: float, window: float = 0.005) -> float:
    """The midpoint of the widest gap between sorted ``values`` within ``window`` (a share of the
    values) on either side of ``quantile``."""
    ordered = np.sort(values.astype(np.float64).reshape(-1))
    centre = int(quantile * (len(ordered) - 1))
    reach = max(1, int(window * len(ordered)))
    low, high = max(0, centre - reach), min(len(ordered) - 1, centre + reach)
    gaps = np.diff(ordered[low : high + 1])
    widest = low + int(np.argmax(gaps))
    return float((ordered[widest] + ordered[widest + 1]) / 2)
