"""Band extraction on the noisy field of random weights: nothing missed against the dense grid.

A noise field has surface almost everywhere, so the band covers most of the grid: this checks
safety (no component lost, the same surface), not speed.
"""

from __future__ import annotations

import io

import pytest

from bench.mesh_metrics import chamfer_relative, component_count
from export.u2net_synthetic import synthetic_product_photo
from img2mesh.mesh_extraction import DensityField, extract_surface
from tests.support.triton import GeneratedWeights
from triposr.checkpoint import load_tsr
from triposr.reference import ReferencePipeline, level_between_values

RESOLUTION = 64


@pytest.fixture(scope="module")
def noise(test_weights: GeneratedWeights) -> tuple[DensityField, float]:
    buffer = io.BytesIO()
    synthetic_product_photo().save(buffer, "JPEG", quality=92)
    reference = ReferencePipeline(load_tsr(str(test_weights.random)), test_weights.u2net)
    codes = reference.scene_codes(reference.condition(buffer.getvalue(), 0.85))
    field = reference.density_field(codes)
    threshold = level_between_values(reference.grid_density(codes, RESOLUTION), 0.7)
    return field, threshold


def test_band_misses_no_component_of_a_noise_field(noise: tuple[DensityField, float]) -> None:
    field, threshold = noise
    dense = extract_surface(field, RESOLUTION, threshold, extraction="dense")
    band = extract_surface(field, RESOLUTION, threshold)
    dense_components = component_count(len(dense.vertices), dense.faces)
    band_components = component_count(len(band.vertices), band.faces)
    chamfer = chamfer_relative(dense.vertices, band.vertices)
    print(f"\nnoise field at {RESOLUTION}³: dense {len(dense.faces)} faces, {dense_components} components; "
          f"band {len(band.faces)} faces, {band_components} components, {band.points_evaluated / RESOLUTION**3:.1%} "
          f"of the grid evaluated; Chamfer / diagonal {chamfer:.2e}")
    assert band_components >= dense_components
    assert chamfer <= 0.005
    assert len(band.faces) == len(dense.faces)
