"""A job's metadata.size: the accepted shapes, and a clear permanent failure for anything else."""

from __future__ import annotations

import pytest

from asset.real_size import RealSize
from client_worker.errors import PermanentJobError
from client_worker.pipeline.job_size import size_from_metadata


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"size": {"height_cm": 12}}, RealSize(0.12, "height")),
        ({"size": {"height_m": 0.12}}, RealSize(0.12, "height")),
        ({"size": {"largest_side_cm": 30.5}}, RealSize(0.305, "largest_side")),
        ({"size": {"largest_side_m": 2}}, RealSize(2.0, "largest_side")),
        ({"productTitle": "Mug"}, None),
        ({"size": None}, None),
        (None, None),
    ],
)
def test_sizes_in_metres_or_centimetres(metadata: dict | None, expected: RealSize | None) -> None:
    size = size_from_metadata(metadata)
    if expected is None:
        assert size is None
    else:
        assert size is not None and size.dimension == expected.dimension
        assert size.metres == pytest.approx(expected.metres)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ({"height": 12}, r"must name exactly one dimension of the product, as one of \{\"height_m\": …\}"),
        ({"height_cm": 12, "height_m": 0.12}, "must name exactly one dimension"),
        ("12 cm", "must name exactly one dimension"),
        ({"height_cm": "twelve"}, r"metadata.size.height_cm must be a number of cm, got 'twelve'"),
        ({"height_cm": True}, "must be a number of cm"),
        ({"largest_side_m": float("nan")}, "must be a number of m"),
        ({"height_m": 12}, r"is 12 m, outside what a product can measure \(0.005 … 10 m\); check the unit"),
        ({"largest_side_cm": 0.1}, r"outside what a product can measure \(0.5 … 1000 cm\)"),
        ({"height_cm": -3}, "outside what a product can measure"),
    ],
)
def test_bad_sizes_fail_the_job_with_a_message_the_merchant_can_act_on(size: object, message: str) -> None:
    with pytest.raises(PermanentJobError, match=message):
        size_from_metadata({"size": size})
