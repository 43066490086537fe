"""The job inside a Celery message: a `Job`, or why there is none.

The consumer parses in two steps so that it can treat the failures differently:
``celery_wire.parse_message`` raises `RejectedMessage` for an element that is not one of our tasks
at all (moved aside to the rejected list), and `parse_job` raises `MalformedJob` for one of our
tasks whose payload or options are wrong (reported to the backend as `failed` when it names a
usable job id, else moved aside too).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from client_worker.errors import PermanentJobError
from client_worker.jobs import ids
from client_worker.jobs.celery_wire import TaskMessage
from client_worker.jobs.job import IMAGE_URLS_MAX, JOB_OPTION, Job
from client_worker.jobs.limits import MessageLimits


class MalformedJob(PermanentJobError):
    """Our task, but its payload cannot be processed; `job_id` is set when the payload names one."""

    def __init__(self, message: str, job_id: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id


def parse_job(message: TaskMessage, limits: MessageLimits | None = None) -> Job:
    """Validate the job payload of a task within ``limits`` (``IMAGE_URLS_MAX``); raises `MalformedJob`
    with an actionable message."""
    payload = _payload(message)
    job_id = _loose_job_id(payload)
    if message.problem is not None:
        raise MalformedJob(message.problem, job_id)
    try:
        return Job.model_validate(payload, context={IMAGE_URLS_MAX: (limits or MessageLimits()).image_urls_max})
    except ValidationError as error:
        options = [problem["msg"] for problem in error.errors() if problem["type"] == JOB_OPTION]
        if len(options) == len(error.errors()):  # a bad job option says what is wrong in its own words
            raise MalformedJob("; ".join(options), job_id) from None
        problems = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]) or "payload"
            text = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "missing":
                text = "is required"
            problems.append(f"'{name[:100]}' {text}")
        raise MalformedJob("malformed job: " + "; ".join(problems[:10]), job_id) from None


def _payload(message: TaskMessage) -> dict[str, Any]:
    """The job payload: the kwargs, completed from positional args like `task(job_id, **kw)`."""
    payload = dict(message.kwargs)
    args = list(message.args)
    if args and isinstance(args[0], dict):
        payload = {**args.pop(0), **payload}
    if args and isinstance(args[0], (str, int)) and "job_id" not in payload and "jobId" not in payload:
        payload["job_id"] = args.pop(0)
    return payload


def _loose_job_id(payload: dict[str, Any]) -> str | None:
    """The payload's job id if it is usable as one (to report the job's failure under), else None."""
    value = payload.get("job_id", payload.get("jobId"))
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return ids.job_id(ids.id_text(value))
        return ids.job_id(value) if isinstance(value, str) else None
    except ValueError:
        return None
