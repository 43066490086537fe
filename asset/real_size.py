"""The real size of a product: how long one of its dimensions is, in metres.

A single photo carries no scale, so the size comes from outside (the merchant, or the worker's
default for products) and ``asset.mesh_preparation`` scales the mesh to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MIN_SIZE_M = 0.005
MAX_SIZE_M = 10.0
"""The sizes a product can have: from a 5 mm charm to a 10 m boat. Anything else is a unit mistake."""


@dataclass(frozen=True)
class RealSize:
    """The length of the product's largest bounding-box side, or of its height (the up axis)."""

    metres: float
    dimension: Literal["largest_side", "height"] = "largest_side"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.metres) and MIN_SIZE_M <= self.metres <= MAX_SIZE_M):
            raise ValueError(f"a product's size must be {MIN_SIZE_M:g} … {MAX_SIZE_M:g} m, got {self.metres}")
        if self.dimension not in ("largest_side", "height"):
            raise ValueError(f"dimension must be 'largest_side' or 'height', got {self.dimension!r}")
