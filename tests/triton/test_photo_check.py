"""The ``photo_check`` ensemble on a real tritonserver serving the real u2netp: drawn and real photos
in, their measures and problems out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from bench.photo_measuring import local_photo_check
from bench.real_photos import real_photos
from img2mesh.contract import PHOTO_CHECK, PHOTO_MEASURES
from img2mesh.photo_measures import CUT_OFF, PhotoMeasures
from tests.support import photo_check_photos as photos
from tests.triton.conftest import image_input


def check(server: object, data: bytes) -> PhotoMeasures:
    client = grpcclient.InferenceServerClient(server.grpc_url)  # type: ignore[attr-defined]
    result = client.infer(PHOTO_CHECK, [image_input(data)], outputs=[grpcclient.InferRequestedOutput(PHOTO_MEASURES)],
                          client_timeout=120)
    return PhotoMeasures.from_dict(json.loads(result.as_numpy(PHOTO_MEASURES).reshape(-1)[0]))


def test_a_clean_product_photo_passes(triton_server: object) -> None:
    measures = check(triton_server, photos.clean())
    assert measures.usable and measures.mask_source == "u2net" and (measures.width, measures.height) == (800, 600)
    assert measures.object_count == 1 and 350 <= measures.object_side_px <= 420


def test_a_photo_with_transparency_is_checked_on_its_alpha(triton_server: object) -> None:
    measures = check(triton_server, photos.transparent())
    assert measures.usable and measures.mask_source == "alpha"


@pytest.mark.parametrize("name", sorted(photos.UNUSABLE))
def test_each_unusable_photo_is_refused_with_its_problem(triton_server: object, name: str) -> None:
    measures = check(triton_server, photos.UNUSABLE[name]())
    assert [problem.code for problem in measures.problems] == [photos.PROBLEM_OF[name]]
    if photos.PROBLEM_OF[name] == CUT_OFF:
        assert measures.cut_off_sides == ("right",) and "right edge" in measures.problems[0].message


def test_a_file_that_is_no_image_fails_only_its_request(triton_server: object) -> None:
    with pytest.raises(InferenceServerException) as refused:
        check(triton_server, b"<html>moved</html>")
    assert "INVALID_ARGUMENT" in str(refused.value.status()) and "not an image" in refused.value.message()
    assert check(triton_server, photos.clean()).usable


@pytest.mark.parametrize("name", ["coffee", "horse", "present-4x", "coffee-cut-bottom", "brick", "two-presents"])
def test_real_photos_get_the_same_verdict_through_triton(triton_server: object, u2netp: Path, name: str) -> None:
    """The ensemble (decoding, the served u2netp, photo_measure) says what the local check says."""
    photo = next(photo for photo in real_photos() if photo.name == name)
    served, local = check(triton_server, photo.make()), local_photo_check(u2netp)(photo.make())
    assert [problem.code for problem in served.problems] == [problem.code for problem in local.problems]
    assert served.mask_source == local.mask_source and served.cut_off_sides == local.cut_off_sides
    assert served.undecided_share == pytest.approx(local.undecided_share, abs=0.01)
    assert served.object_side_px == pytest.approx(local.object_side_px, abs=3)
