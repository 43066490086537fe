"""Failure kinds of a job step.

The worker decides between retrying and failing a job from the exception type alone, so every
step (download, Triton call, storage, webhook) raises one of these with a message that a
merchant's developer can act on.
"""


class JobError(Exception):
    """A step of a job failed; ``str(error)`` is the message reported on the job's status."""


class PermanentJobError(JobError):
    """Retrying cannot help (bad image, 404, malformed job): fail the job at once."""


class TransientJobError(JobError):
    """The same attempt may succeed later (Triton restarting, network, 5xx): retry with backoff."""
