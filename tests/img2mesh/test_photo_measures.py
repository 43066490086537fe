"""The photo check's measures on drawn photos through the U²-Net stand-in, and on made-up masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from img2mesh.background_removal import u2net_input
from img2mesh.contract import U2NET_SIZE
from img2mesh.image_decoding import decode_image
from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.photo_measures import (
    MAX_UNDECIDED_SHARE,
    MIN_OBJECT_SIDE_PX,
    SECOND_OBJECT_MIN_RATIO,
    UNCERTAIN_MASK,
    PhotoMeasures,
    measure_mask,
    measure_photo,
)
from tests.support import photo_check_photos as photos


@pytest.fixture(scope="module")
def measure(u2net_like: Path) -> Callable[[bytes], PhotoMeasures]:
    session = onnxruntime_session(u2net_like)

    def run(data: bytes) -> PhotoMeasures:
        rgba = decode_image(data)
        prediction = session.run(None, {session.get_inputs()[0].name: u2net_input(rgba)[None]})[0][0]
        return measure_photo(rgba, prediction)

    return run


def test_a_clean_product_photo_has_no_problem(measure: Callable[[bytes], PhotoMeasures]) -> None:
    measures = measure(photos.clean())
    assert measures.usable and measures.mask_source == "u2net"
    assert measures.object_count == 1 and measures.cut_off_sides == ()
    # The product is drawn 64 % of 600 pixels tall; the mask's grid is 320 cells.
    assert abs(measures.object_side_px - 0.64 * 600) <= 600 / U2NET_SIZE * 4
    assert measures.undecided_share < MAX_UNDECIDED_SHARE


@pytest.mark.parametrize("name", sorted(photos.UNUSABLE))
def test_each_unusable_photo_gets_exactly_its_problem(measure: Callable[[bytes], PhotoMeasures], name: str) -> None:
    measures = measure(photos.UNUSABLE[name]())
    assert [problem.code for problem in measures.problems] == [photos.PROBLEM_OF[name]]


def test_the_cut_off_side_is_named(measure: Callable[[bytes], PhotoMeasures]) -> None:
    measures = measure(photos.cut_off_right())
    assert measures.cut_off_sides == ("right",)
    assert measures.problems[0].message == ("the product touches the right edge of the photo: use one that shows "
                                            "all of it")


def test_two_products_are_counted_and_a_tiny_one_is_measured_in_source_pixels(
    measure: Callable[[bytes], PhotoMeasures],
) -> None:
    two = measure(photos.two_products())
    assert two.object_count == 2 and two.second_object_ratio > 0.9
    assert two.problems[0].message == "the photo shows 2 objects: use one that shows only the product"
    tiny = measure(photos.tiny())
    assert abs(tiny.object_side_px - 90) <= 1200 / U2NET_SIZE * 3 and tiny.object_side_px < MIN_OBJECT_SIDE_PX


def test_a_photo_with_transparency_is_measured_on_its_alpha(measure: Callable[[bytes], PhotoMeasures]) -> None:
    measures = measure(photos.transparent())
    assert measures.mask_source == "alpha" and measures.usable
    assert abs(measures.object_side_px - 0.64 * 600) <= 600 / U2NET_SIZE * 4


def test_faint_noise_of_an_empty_photo_is_no_object() -> None:
    """Raw sigmoid noise far below even odds: rembg's min-max normalisation would make it an object."""
    noise = np.random.default_rng(3).uniform(0.0, 0.05, (U2NET_SIZE, U2NET_SIZE)).astype(np.float32)
    assert [problem.code for problem in measure_mask(noise, 800, 600, "u2net").problems] == ["no_object"]


def test_a_mask_undecided_across_the_object_is_uncertain() -> None:
    mask = np.zeros((U2NET_SIZE, U2NET_SIZE), np.float32)
    mask[80:240, 100:220] = 0.95
    mask[90:230, 110:210] = 0.6  # most of the object at barely better than even odds
    measures = measure_mask(mask, 800, 600, "u2net")
    assert [problem.code for problem in measures.problems] == [UNCERTAIN_MASK]
    assert measures.undecided_share > MAX_UNDECIDED_SHARE


def test_small_detached_parts_are_not_objects_and_corners_name_two_sides() -> None:
    mask = np.zeros((U2NET_SIZE, U2NET_SIZE), np.float32)
    mask[0:200, 0:150] = 1.0  # the product, cut off at the top-left corner
    side = int(np.sqrt(SECOND_OBJECT_MIN_RATIO * 200 * 150)) - 5
    mask[250:250 + side, 250:250 + side] = 1.0  # a detached part just below the threshold
    measures = measure_mask(mask, 640, 640, "u2net")
    assert measures.object_count == 1 and 0 < measures.second_object_ratio < SECOND_OBJECT_MIN_RATIO
    assert measures.cut_off_sides == ("top", "left")
    assert measures.problems[0].message.startswith("the product touches the top and left edges of the photo")


def test_measures_survive_their_json() -> None:
    mask = np.zeros((U2NET_SIZE, U2NET_SIZE), np.float32)
    mask[0:200, 100:150] = 1.0
    measures = measure_mask(mask, 800, 600, "u2net")
    assert PhotoMeasures.from_dict(json.loads(measures.to_json())) == measures
