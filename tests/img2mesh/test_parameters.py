"""MeshParameters.from_request: defaults, accepted spellings, and refusals naming the problem."""

from __future__ import annotations

import pytest

from img2mesh.errors import InvalidInput
from img2mesh.parameters import MeshParameters


def test_defaults_match_the_architecture_contract() -> None:
    assert MeshParameters.from_request({}) == MeshParameters(resolution=256, threshold=25.0, foreground_ratio=0.85)


def test_numbers_and_numeric_strings_are_accepted() -> None:
    parameters = MeshParameters.from_request({"resolution": "128", "threshold": " 12.5 ", "foreground_ratio": 1})
    assert parameters == MeshParameters(resolution=128, threshold=12.5, foreground_ratio=1.0)
    assert isinstance(parameters.resolution, int)
    assert MeshParameters.from_request({"resolution": 320.0, "threshold": 3}).resolution == 320


def test_triton_reserved_names_are_ignored() -> None:
    assert MeshParameters.from_request({"triton_enable_empty_final_response": True}) == MeshParameters()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"resolution": 15}, "resolution must be from 16 to 320, got 15"),
        ({"resolution": 321}, "resolution must be from 16 to 320"),
        ({"resolution": 64.5}, "whole number"),
        ({"resolution": True}, "resolution must be a number"),
        ({"resolution": "high"}, "resolution must be a number, got the text 'high'"),
        ({"threshold": 0}, "threshold must be a finite number greater than 0"),
        ({"threshold": "inf"}, "threshold must be a finite number"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"foreground_ratio": 0.49}, "foreground_ratio must be from 0.5 to 1.0"),
        ({"foreground_ratio": "nan"}, "foreground_ratio must be from 0.5 to 1.0"),
        ({"resoluton": 128}, "unknown parameter\\(s\\) resoluton: the allowed ones are resolution, threshold, foreground_ratio"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        MeshParameters.from_request(params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, (0, 0)), ({"target_faces": 0}, (0, 0)), ({"target_faces": "20000", "texture_size": 1024}, (20000, 1024))],
)
def test_triangle_budget_and_texture_size_are_off_unless_asked(params: dict[str, object], expected: tuple[int, int]) -> None:
    parameters = MeshParameters.from_request(params)
    assert (parameters.target_faces, parameters.texture_size) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target_faces": 999}, "target_faces must be 0 \\(off\\), or 1000 … 2000000, got 999"),
        ({"target_faces": 2.5}, "target_faces must be a whole number"),
        ({"texture_size": 300}, "texture_size must be one of 0, 256, 512, 1024, 2048, 4096, got 300"),
    ],
)
def test_bad_budgets_and_sizes_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        MeshParameters.from_request(params)
