"""The product's real size a job asks for in ``metadata.size``.

A photo carries no scale, so AR viewers would show every product at the size TripoSR normalises
it to (about 1.5 m). A job may say how big the product really is, in exactly one of these
fields (docs/webhooks.md, "Job options"):

    "metadata": {"size": {"height_cm": 12}}          # or height_m, largest_side_cm, largest_side_m

``height`` is the product's extent along the up axis as it stands; ``largest_side`` is the
longest side of its bounding box. Without one, the largest side is the worker's default
(``DEFAULT_LARGEST_SIDE_M``). A bad value fails the job permanently, with a message the merchant
can act on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from asset.real_size import MAX_SIZE_M, MIN_SIZE_M, RealSize
from client_worker.errors import PermanentJobError

_FIELDS: dict[str, tuple[Literal["height", "largest_side"], float]] = {
    "height_m": ("height", 1.0),
    "height_cm": ("height", 0.01),
    "largest_side_m": ("largest_side", 1.0),
    "largest_side_cm": ("largest_side", 0.01),
}


def size_from_metadata(metadata: Mapping[str, Any] | None) -> RealSize | None:
    """The size a job's ``metadata.size`` asks for, or None when it names none.

    Raises:
        PermanentJobError: ``size`` is not an object with exactly one of the fields above, or its
            value is not a number of metres within ``MIN_SIZE_M`` … ``MAX_SIZE_M``.
    """
    if not isinstance(metadata, Mapping) or metadata.get("size") is None:
        return None
    size = metadata["size"]
    accepted = ", ".join(f'{{"{name}": …}}' for name in _FIELDS)
    if not isinstance(size, Mapping) or len(size) != 1 or next(iter(size)) not in _FIELDS:
        raise PermanentJobError(
            f"metadata.size must name exactly one dimension of the product, as one of {accepted}; "
            f"got {_shown(size)}"
        )
    ((field, value),) = size.items()
    dimension, metres_per_unit = _FIELDS[field]
    unit = "m" if metres_per_unit == 1.0 else "cm"
    low, high = MIN_SIZE_M / metres_per_unit, MAX_SIZE_M / metres_per_unit
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PermanentJobError(f"metadata.size.{field} must be a number of {unit}, got {_shown(value)}")
    metres = value * metres_per_unit
    if not MIN_SIZE_M <= metres <= MAX_SIZE_M:
        raise PermanentJobError(
            f"metadata.size.{field} is {value:g} {unit}, outside what a product can measure "
            f"({low:g} … {high:g} {unit}); check the unit"
        )
    return RealSize(metres, dimension)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
