"""The one back-off policy of the worker: job retries, webhook retries and webhook redelivery.

Exponential steps with "equal jitter": half of each step is fixed, half random. Full jitter can
retry almost at once, which hammers a Triton (or backend) that is still starting; equal jitter
keeps a floor while still spreading a burst of retries apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``base_s`` with each failure, up to ``max_s``."""

    base_s: float
    max_s: float

    def step(self, failures: int) -> float:
        """The longest delay after ``failures`` failures (1 for the first)."""
        return min(self.max_s, self.base_s * 2 ** max(0, failures - 1))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """A delay in ``[step / 2, step]`` after ``failures`` failures."""
        step = self.step(failures)
        return step / 2 + (rng or random).uniform(0, step / 2)
