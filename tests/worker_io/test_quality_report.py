"""The quality check's thresholds, its merchant-readable problems and the `quality` object by mode."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from client_worker.metrics import QUALITY_BUCKETS, Metrics
from client_worker.pipeline import quality_check as check
from client_worker.pipeline.quality_check import QualityMeasures, quality_report, refusal, rejudged, worth_retrying

GOOD = QualityMeasures(silhouette_iou=0.95, mirrored_iou=0.4, flipped_iou=0.5, outline_covered=0.98,
                       outline_excess=0.03, colour_difference=5.0, parts=1, loose_parts=0, loose_share=0.0,
                       open_edges=0.0)


def codes(measures: QualityMeasures) -> list[str]:
    return [problem.code for problem in measures.problems]


TURNED = GOOD.silhouette_iou + check.ORIENTATION_MARGIN


@pytest.mark.parametrize(("at_threshold", "beyond", "code"), [
    ({"silhouette_iou": check.MIN_SILHOUETTE_IOU}, {"silhouette_iou": check.MIN_SILHOUETTE_IOU - 0.001}, check.OUTLINE),
    ({"mirrored_iou": TURNED}, {"mirrored_iou": TURNED + 0.001}, check.MIRRORED),
    ({"flipped_iou": TURNED}, {"flipped_iou": TURNED + 0.001}, check.UPSIDE_DOWN),
    ({"colour_difference": check.MAX_COLOUR_DIFFERENCE}, {"colour_difference": check.MAX_COLOUR_DIFFERENCE + 0.1},
     check.COLOURS),
    ({"loose_parts": check.MAX_LOOSE_PARTS}, {"loose_parts": check.MAX_LOOSE_PARTS + 1}, check.LOOSE_PARTS),
    ({"loose_share": check.MAX_LOOSE_SHARE}, {"loose_share": check.MAX_LOOSE_SHARE + 0.001}, check.LOOSE_PARTS),
    ({"open_edges": check.MAX_OPEN_EDGES}, {"open_edges": check.MAX_OPEN_EDGES + 0.001}, check.HOLES),
])
def test_each_threshold_names_its_own_problem(at_threshold: dict[str, float], beyond: dict[str, float],
                                              code: str) -> None:
    assert codes(GOOD) == []
    assert codes(replace(GOOD, **at_threshold)) == []
    assert codes(replace(GOOD, **beyond)) == [code]


def test_the_problems_say_what_a_merchant_sees() -> None:
    short = replace(GOOD, silhouette_iou=0.7, outline_covered=0.71, outline_excess=0.05)
    assert short.problems[0].message == ("the model's outline covers 71 % of the product's in the photo: "
                                         "a part of the product is missing")
    spilling = replace(GOOD, silhouette_iou=0.7, outline_covered=0.99, outline_excess=0.4)
    assert "reaches beyond the product's in the photo by 40 % of its area" in spilling.problems[0].message
    flakes = replace(GOOD, parts=4, loose_parts=3, loose_share=0.012)
    assert flakes.problems[0].message == "3 loose pieces float beside the model (1.2 % of its surface)"
    assert replace(GOOD, colour_difference=34.4).problems[0].message == (
        "the model's colours differ from the photo's by 34/255 on average")


def test_a_turned_over_outline_is_reported_only_when_it_matches_the_photo_turned_over() -> None:
    mirrored = replace(GOOD, silhouette_iou=0.4, outline_covered=0.5, mirrored_iou=0.95)
    assert codes(mirrored) == [check.OUTLINE, check.MIRRORED]
    # A broken outline that happens to match its mirror image a little better is not "mirrored".
    broken = replace(GOOD, silhouette_iou=0.4, outline_covered=0.5, mirrored_iou=0.6)
    assert codes(broken) == [check.OUTLINE]
    # A symmetric product matches its mirror image about as well as itself.
    assert codes(replace(GOOD, mirrored_iou=GOOD.silhouette_iou + check.ORIENTATION_MARGIN / 2)) == []


def test_the_quality_object_by_mode() -> None:
    broken = replace(GOOD, loose_parts=5, parts=6, loose_share=0.02)
    assert quality_report("off", broken) == {"mode": "off"}
    assert quality_report("report", broken) == {"mode": "report", "measures": broken.to_dict()}
    review = quality_report("review", broken)
    assert (review["verdict"], [problem["code"] for problem in review["problems"]]) == ("review", [check.LOOSE_PARTS])
    assert refusal(review) is None
    assert quality_report("review", GOOD)["verdict"] == "ok" and quality_report("review", GOOD)["problems"] == []
    strict = quality_report("strict", broken)
    refused = refusal(strict)
    assert strict["verdict"] == "refused" and refused is not None
    assert str(refused) == "the model failed its check against the photo: " + strict["problems"][0]["message"]
    assert refused.report == {check.QUALITY_KEY: strict}
    unchecked = quality_report("strict", None, unchecked="no framed photo")
    assert unchecked == {"mode": "strict", "unchecked": "no framed photo", "verdict": "unchecked"}
    assert refusal(unchecked) is None


def test_a_retry_at_the_next_preset_is_reported_and_only_an_outline_is_worth_one() -> None:
    short = replace(GOOD, silhouette_iou=0.8, outline_covered=0.8)
    assert worth_retrying(short) and not worth_retrying(GOOD)
    assert not worth_retrying(replace(GOOD, colour_difference=50.0))
    retry = check.retry_report("fast", short, {"inference": 1.0})
    report = quality_report("strict", short, retry=retry)
    assert report["retry"] == {"preset": "fast", "measures": short.to_dict(),
                               "problems": [{"code": check.OUTLINE, "message": short.problems[0].message}],
                               "timings_ms": {"inference": 1.0}}
    assert str(refusal(report)).startswith("the model failed its check against the photo, also when made again at "
                                           "the next preset: ")


def test_copies_are_judged_again_by_the_jobs_own_mode() -> None:
    broken = replace(GOOD, open_edges=0.5)
    made_under_review = quality_report("review", broken)
    assert rejudged(made_under_review, "strict")["verdict"] == "refused"
    assert rejudged(made_under_review, "off") == {"mode": "off"}
    assert rejudged(quality_report("report", GOOD), "review")["verdict"] == "ok"
    earlier = rejudged(None, "review")
    assert earlier["verdict"] == "unchecked" and "did not check them" in earlier["unchecked"]


def test_the_histograms_are_measures_and_count_what_a_report_says() -> None:
    assert set(QUALITY_BUCKETS) <= {field.name for field in fields(QualityMeasures)}
    metrics = Metrics()
    metrics.observe_quality(quality_report("review", replace(GOOD, colour_difference=None), retry={"preset": "fast"}))
    sample = metrics.registry.get_sample_value
    assert sample("img2mesh_worker_quality_silhouette_iou_count") == 1
    assert sample("img2mesh_worker_quality_colour_difference_count") == 0
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "ok"}) == 1
    assert sample("img2mesh_worker_quality_verdicts_total", {"verdict": "retried"}) == 1
