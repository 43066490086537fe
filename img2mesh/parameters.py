"""The optional per-request knobs of the image-to-mesh pipeline, validated in one place.

Triton hands request parameters over as ``str``, ``int``, ``float`` or ``bool``; clients also
send numbers as strings. Everything is checked here, against the names, defaults and ranges of
``img2mesh.contract``, so that a bad value fails the request with a message naming the parameter
and its allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from img2mesh.contract import (
    FOREGROUND_RATIO,
    REQUEST_PARAMETERS,
    RESERVED_PARAMETER_PREFIX,
    RESOLUTION,
    TARGET_FACES,
    TEXTURE_SIZE,
    THRESHOLD,
    RequestParameter,
)
from img2mesh.errors import InvalidInput


@dataclass(frozen=True)
class MeshParameters:
    """Grid resolution, density threshold, the object's share of the frame, triangle budget, texture size."""

    resolution: int = int(RESOLUTION.default)
    threshold: float = float(THRESHOLD.default)
    foreground_ratio: float = float(FOREGROUND_RATIO.default)
    target_faces: int = int(TARGET_FACES.default)
    texture_size: int = int(TEXTURE_SIZE.default)

    @classmethod
    def from_request(cls, params: Mapping[str, object]) -> MeshParameters:
        """Validate request parameters; missing ones take the defaults.

        Raises:
            InvalidInput: an unknown name, a wrong type, or a value out of range.
        """
        allowed = [field.name for field in fields(cls)]
        unknown = sorted(
            name for name in params if name not in allowed and not name.startswith(RESERVED_PARAMETER_PREFIX)
        )
        if unknown:
            raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)}: the allowed ones are {', '.join(allowed)}")
        values: dict[str, object] = {}
        for parameter in REQUEST_PARAMETERS:
            if parameter.name in params:
                values[parameter.name] = _validated(parameter, params[parameter.name])
        return cls(**values)


def _validated(parameter: RequestParameter, value: object) -> int | float:
    """``value`` as the parameter's type, inside its range."""
    number = _number(parameter.name, value)
    name = parameter.name
    if parameter.kind is int:
        if not number.is_integer():
            raise InvalidInput(f"{name} must be a whole number ({parameter.allowed()}), got {value!r}")
        whole = int(number)
        if parameter.choices:
            if whole not in parameter.choices:
                raise InvalidInput(f"{name} must be one of {parameter.allowed()}, got {whole}")
        elif whole != parameter.off and not parameter.minimum <= whole <= parameter.maximum:  # type: ignore[operator]
            if parameter.off is None:
                raise InvalidInput(f"{name} must be from {parameter.minimum} to {parameter.maximum}, got {whole}")
            raise InvalidInput(f"{name} must be {parameter.allowed()}, got {whole}")
        return whole
    if parameter.above is not None:
        if not math.isfinite(number) or number <= parameter.above:
            raise InvalidInput(
                f"{name} must be a finite number greater than {parameter.above} "
                f"(default {parameter.default}), got {value!r}"
            )
        return number
    if not parameter.minimum <= number <= parameter.maximum:  # type: ignore[operator]
        raise InvalidInput(
            f"{name} must be from {parameter.minimum} to {parameter.maximum} "
            f"(default {parameter.default}), got {value!r}"
        )
    return number


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
