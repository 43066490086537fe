"""When a failed attempt of a job is tried again, and when the job fails for good.

* Triton unavailable (down, restarting, model not loaded): retry soon without using up an
  attempt, and pause taking jobs until Triton is ready again, so an outage of any length delays
  jobs but fails none.
* Any other transient failure: retry with the worker's back-off until ``MAX_ATTEMPTS``.
* A permanent failure (bad image, bad job): fail at once with its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from client_worker.backoff import Backoff
from client_worker.errors import JobError, TransientJobError
from client_worker.pipeline.inference import TritonUnavailable

TRITON_WAIT_RETRY_S = 2.0
"""How soon a job that met a Triton outage is tried again (the intake pauses meanwhile)."""


@dataclass(frozen=True)
class Retry:
    """Try the job again after ``delay_s``; ``counted`` False gives the attempt back."""

    delay_s: float
    counted: bool
    pause_intake: bool = False


@dataclass(frozen=True)
class GiveUp:
    """Fail the job: ``kind`` is ``permanent``, ``exhausted`` or ``expired``; ``message`` goes to the backend."""

    kind: Literal["permanent", "exhausted", "expired"]
    message: str


class RetryPolicy:
    def __init__(self, max_attempts: int, backoff: Backoff) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff

    def after_failure(self, error: JobError, attempt: int) -> Retry | GiveUp:
        """What to do after attempt number ``attempt`` failed with ``error``."""
        if isinstance(error, TritonUnavailable):
            return Retry(TRITON_WAIT_RETRY_S, counted=False, pause_intake=True)
        if isinstance(error, TransientJobError):
            if attempt < self.max_attempts:
                return Retry(self.backoff.delay(attempt), counted=True)
            return GiveUp("exhausted", f"gave up after {_attempts(attempt)}; last error: {error}")
        return GiveUp("permanent", str(error))

    def before_attempt(self, attempt: int) -> GiveUp | None:
        """None when attempt number ``attempt`` may start; else why the job fails instead.

        Attempts are counted when they start, so one that ended without a result (the worker
        running it stopped or crashed) counts too.
        """
        if attempt <= self.max_attempts:
            return None
        return GiveUp(
            "exhausted",
            f"gave up after {_attempts(attempt - 1)}: the earlier ones ended without a result "
            "(the worker processing it stopped or crashed)",
        )


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"
