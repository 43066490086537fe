"""The stages of a job, one word each.

The same word names a stage everywhere a job's progress shows: the ``stage`` of `processing`
updates and of a failure (docs/webhooks.md), the ``stage`` label of the worker's metrics, the
``stage`` field of its logs and the key of the stage's duration in ``timings_ms``.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    INTAKE = "intake"
    """The message is read and the job admitted (failures only: a job is not reported in it)."""
    DOWNLOAD = "download"
    CHECK = "check"
    """The photo check of the downloaded candidates (docs/photo-check.md)."""
    INFERENCE = "inference"
    ENCODING = "encoding"
    UPLOAD = "upload"
    COPY = "copy"
    """Instead of inference, encoding and upload: copies of an earlier job's files (the asset cache)."""


PROGRESS: dict[Stage, int] = {Stage.DOWNLOAD: 5, Stage.CHECK: 12, Stage.INFERENCE: 20, Stage.ENCODING: 75, Stage.UPLOAD: 90, Stage.COPY: 90}
"""Percent reported when each stage starts (inference dominates the time)."""
