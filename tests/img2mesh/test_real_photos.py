"""The photo check on real photographs (bench/real_photos.py) through the real u2netp: each photo
gets the verdict and a reason a person expects, and every documented exception is in
docs/photo-check.md with its reason (where the check improves, the test says to update it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.photo_measuring import local_photo_check
from bench.real_photos import RealPhoto, real_photos
from img2mesh.photo_measures import PhotoMeasures

PHOTOS = {photo.name: photo for photo in real_photos()}
DOC = Path(__file__).resolve().parents[2] / "docs" / "photo-check.md"


@pytest.fixture(scope="module")
def measured(u2netp: Path) -> dict[str, PhotoMeasures]:
    check = local_photo_check(u2netp)
    return {name: check(photo.make()) for name, photo in PHOTOS.items()}


def _verdict(measures: PhotoMeasures) -> str:
    return "usable" if measures.usable else ", ".join(problem.code for problem in measures.problems)


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_each_real_photo_gets_the_verdict_a_person_expects(measured: dict[str, PhotoMeasures], name: str) -> None:
    photo: RealPhoto = PHOTOS[name]
    measures = measured[name]
    print(f"\n{name}: {photo.what}: {_verdict(measures)} ({measures.to_dict()})")
    codes = {problem.code for problem in measures.problems}
    right = measures.usable if photo.usable else bool(codes & set(photo.expected or ()))
    if photo.known:
        assert not right, f"{name} now gets the verdict a person expects: drop its `known` and update docs/photo-check.md"
        assert measures.usable, f"{name}: a documented exception is a false acceptance, never a false refusal"
    else:
        assert right, f"{name}: a person expects {photo.expected or 'usable'}, the check says {_verdict(measures)}"
        for problem in measures.problems:
            assert problem.message and len(problem.message) < 200


def test_every_measure_stays_in_its_documented_range(measured: dict[str, PhotoMeasures]) -> None:
    for name, measures in measured.items():
        assert 0 <= measures.foreground_share <= 1 and 0 <= measures.second_object_ratio <= 1, name
        assert 0 <= measures.undecided_share <= 1, name
        assert measures.object_count >= 0 and measures.object_side_px >= 0, name


def test_the_set_is_shown_in_the_docs_with_each_exception() -> None:
    rows = {line.split("|")[1].strip().strip("`"): line for line in DOC.read_text().splitlines()
            if line.startswith("| `")}
    for photo in PHOTOS.values():
        assert photo.name in rows, f"docs/photo-check.md does not list {photo.name} (python -m bench.real_photos --markdown)"
        assert ("(known)" in rows[photo.name]) == bool(photo.known), photo.name
