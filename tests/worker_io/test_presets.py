"""Quality presets: where a job names one, and what an unknown name does."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from asset.material import TextureFormat
from client_worker.jobs.job import Job
from client_worker.pipeline.presets import PRESETS
from img2mesh.contract import RESOLUTION, TEXTURE_SIZE


def test_presets_grow_in_resolution_and_triangles_within_tritons_limits() -> None:
    fast, balanced, quality = PRESETS["fast"], PRESETS["balanced"], PRESETS["quality"]
    assert fast.resolution < balanced.resolution < quality.resolution
    assert fast.target_faces < balanced.target_faces < quality.target_faces
    assert all(RESOLUTION.minimum <= p.resolution <= RESOLUTION.maximum for p in PRESETS.values())
    assert 0 < fast.texture_size < balanced.texture_size < quality.texture_size, "every preset bakes a texture"
    assert all(p.texture_size in TEXTURE_SIZE.choices for p in PRESETS.values())
    assert quality.texture_format is TextureFormat.PNG, "lossless at the top preset"


def job_asking(**payload: object) -> Job:
    return Job.model_validate({"job_id": "j", "shop": "s.myshopify.com", "product_id": "1",
                               "image_urls": ["https://cdn.test/a.jpg"], **payload})


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({}, None),
        ({"quality": "fast"}, "fast"),
        ({"preset": "fast"}, "fast"),
        ({"metadata": {"quality": " Quality "}}, "quality"),
        ({"quality": "fast", "metadata": {"quality": "quality"}}, "fast"),
        ({"metadata": None}, None),
        ({"requested_preset": "quality"}, None),
    ],
)
def test_the_job_names_its_preset_in_kwargs_then_metadata(payload: dict, expected: str | None) -> None:
    assert job_asking(**payload).requested_preset == (PRESETS[expected] if expected else None)


@pytest.mark.parametrize("value", ["ultra", 3])
def test_an_unknown_preset_fails_the_job_listing_the_names(value: object) -> None:
    with pytest.raises(ValidationError, match="use one of fast, balanced, quality"):
        job_asking(metadata={"quality": value})
