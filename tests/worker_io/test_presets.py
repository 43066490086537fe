"""Quality presets: where a job names one, and what an unknown name does."""

from __future__ import annotations

import pytest

from asset.material import TextureFormat
from client_worker.errors import PermanentJobError
from client_worker.pipeline.presets import PRESETS, resolve_preset
from img2mesh.contract import RESOLUTION


def test_presets_grow_in_resolution_and_triangles_within_tritons_limits() -> None:
    fast, balanced, quality = PRESETS["fast"], PRESETS["balanced"], PRESETS["quality"]
    assert fast.resolution < balanced.resolution < quality.resolution
    assert fast.target_faces < balanced.target_faces < quality.target_faces
    assert all(RESOLUTION.minimum <= p.resolution <= RESOLUTION.maximum for p in PRESETS.values())
    assert (fast.texture_size, balanced.texture_size, quality.texture_size) == (512, 1024, 2048)
    assert quality.texture_format is TextureFormat.PNG, "lossless at the top preset"


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"job_id": "j"}, "balanced"),
        ({"quality": "fast"}, "fast"),
        ({"metadata": {"quality": " Quality "}}, "quality"),
        ({"quality": "fast", "metadata": {"quality": "quality"}}, "fast"),
        ({"metadata": None}, "balanced"),
    ],
)
def test_resolve_preset_reads_kwargs_then_metadata(payload: dict, expected: str) -> None:
    assert resolve_preset(payload, default="balanced") == PRESETS[expected]


@pytest.mark.parametrize("value", ["ultra", 3])
def test_unknown_preset_is_a_permanent_error_listing_the_names(value: object) -> None:
    with pytest.raises(PermanentJobError, match="use one of fast, balanced, quality"):
        resolve_preset({"metadata": {"quality": value}}, default="balanced")
