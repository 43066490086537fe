"""The optional per-request knobs of the image-to-mesh pipeline, validated in one place.

Triton hands request parameters over as ``str``, ``int``, ``float`` or ``bool``; clients also
send numbers as strings. Everything is checked here so that a bad value fails the request with a
message naming the parameter and its allowed range (docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from img2mesh.errors import InvalidInput

RESOLUTION_RANGE = (16, 320)
FOREGROUND_RATIO_RANGE = (0.5, 1.0)
# Triton reserves these names for itself; they may reach a model alongside ours.
_RESERVED_PREFIX = "triton_"


@dataclass(frozen=True)
class MeshParameters:
    """Marching-cubes grid resolution, density threshold and the object's share of the frame."""

    resolution: int = 256
    threshold: float = 25.0
    foreground_ratio: float = 0.85

    @classmethod
    def from_request(cls, params: Mapping[str, object]) -> MeshParameters:
        """Validate request parameters; missing ones take the defaults.

        Raises:
            InvalidInput: an unknown name, a wrong type, or a value out of range.
        """
        allowed = [field.name for field in fields(cls)]
        unknown = sorted(name for name in params if name not in allowed and not name.startswith(_RESERVED_PREFIX))
        if unknown:
            raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)}: the allowed ones are {', '.join(allowed)}")
        values: dict[str, object] = {}
        if "resolution" in params:
            values["resolution"] = _resolution(params["resolution"])
        if "threshold" in params:
            values["threshold"] = _threshold(params["threshold"])
        if "foreground_ratio" in params:
            values["foreground_ratio"] = _foreground_ratio(params["foreground_ratio"])
        return cls(**values)


def _resolution(value: object) -> int:
    low, high = RESOLUTION_RANGE
    number = _number("resolution", value)
    if not number.is_integer():
        raise InvalidInput(f"resolution must be a whole number from {low} to {high}, got {value!r}")
    resolution = int(number)
    if not low <= resolution <= high:
        raise InvalidInput(f"resolution must be from {low} to {high}, got {resolution}")
    return resolution


def _threshold(value: object) -> float:
    threshold = _number("threshold", value)
    if not math.isfinite(threshold) or threshold <= 0:
        raise InvalidInput(f"threshold must be a finite number greater than 0 (default 25.0), got {value!r}")
    return threshold


def _foreground_ratio(value: object) -> float:
    low, high = FOREGROUND_RATIO_RANGE
    ratio = _number("foreground_ratio", value)
    if not low <= ratio <= high:
        raise InvalidInput(f"foreground_ratio must be from {low} to {high} (default 0.85), got {value!r}")
    return ratio


def _number(name: str, value: object) -> float:
    """A request value as a float: ints, floats and numeric strings; booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, got the text {value!r}") from None
    except OverflowError:
        raise InvalidInput(f"{name} is far out of range, got {value!r}") from None
