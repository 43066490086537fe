"""The photo check's measures on drawn photos through the real u2netp, and on made-up masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.photo_measuring import local_photo_check
from img2mesh.contract import U2NET_SIZE
from img2mesh.photo_measures import (
    CUT_OFF_FAINT_PROBABILITY,
    MAX_UNDECIDED_SHARE,
    MIN_OBJECT_SIDE_PX,
    SECOND_OBJECT_MIN_RATIO,
    SEVERAL_OBJECTS,
    TOO_SMALL,
    UNCERTAIN_MASK,
    PhotoMeasures,
    measure_mask,
)
from tests.support import photo_check_photos as photos


@pytest.fixture(scope="module")
def measure(u2netp: Path) -> Callable[[bytes], PhotoMeasures]:
    return local_photo_check(u2netp)


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


def test_a_faint_part_connected_to_the_product_counts_where_the_frame_cuts_it() -> None:
    """A saucer's rim cut by the bottom edge, half-dropped by U²-Net (0.3), makes the product cut off;
    the same faint band detached from the product, or fainter than CUT_OFF_FAINT_PROBABILITY, does not."""
    def measured(band: float, gap: int) -> tuple[str, ...]:
        mask = np.zeros((U2NET_SIZE, U2NET_SIZE), np.float32)
        mask[60:240, 100:220] = 0.98
        mask[240 + gap:, 80:240] = band
        return measure_mask(mask, 800, 600, "u2net").cut_off_sides

    assert measured(0.3, 0) == ("bottom",)
    assert measured(0.3, 4) == ()
    assert measured(CUT_OFF_FAINT_PROBABILITY / 2, 0) == ()


def test_a_small_product_split_in_two_is_too_small_not_two_objects() -> None:
    """Two halves of one product 100 pixels across: its size is the problem, not a second object."""
    mask = np.zeros((U2NET_SIZE, U2NET_SIZE), np.float32)
    mask[150:170, 150:159] = 1.0
    mask[150:170, 161:170] = 1.0
    measures = measure_mask(mask, 1600, 1600, "u2net")  # 20 cells of 5 pixels: 100 pixels
    assert measures.object_count == 2 and measures.object_side_px == 100
    assert [problem.code for problem in measures.problems] == [TOO_SMALL]
    assert "only 100 pixels across" in measures.problems[0].message
    mask[150:170, 250:270] = 1.0  # a third part far away: the objects span more than the minimum
    assert [problem.code for problem in measure_mask(mask, 1600, 1600, "u2net").problems] == [SEVERAL_OBJECTS]
