"""The worker's one back-off policy: exponential steps with equal jitter and a cap."""

from __future__ import annotations

import random

from client_worker.backoff import Backoff


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    backoff = Backoff(5.0, 60.0)
    delays = [backoff.delay(attempt, rng) for attempt in range(1, 8)]
    steps = [5, 10, 20, 40, 60, 60, 60]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays[4:]}) == 3  # capped steps still differ: jitter
