"""Compose-style durations (`1m30s`, `500ms`) in seconds."""

from __future__ import annotations

import re


def seconds(duration: str) -> float:
    """``duration`` (e.g. ``1h2m3s``, ``500ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(value) * units[unit] for value, unit in re.findall(r"([\d.]+)(ms|h|m|s)", duration))
