"""Names of the Redis keys the worker writes (the producers' list, `QUEUE_NAME`, is not ours).

Every key starts with `KEY_PREFIX` (default `img2mesh`), so several deployments can share a Redis
and an operator can list everything the worker keeps with `SCAN MATCH img2mesh:*`.
"""

from __future__ import annotations


class RedisKeys:
    """The key names for one `KEY_PREFIX`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def workers(self) -> str:
        """Set of the ids of every worker that registered (alive or dead)."""
        return f"{self.prefix}:workers"

    def heartbeat(self, worker_id: str) -> str:
        """String with a TTL, refreshed while the worker lives."""
        return f"{self.prefix}:heartbeat:{worker_id}"

    def processing(self, worker_id: str) -> str:
        """List of the raw messages a worker has claimed and not yet acknowledged."""
        return f"{self.prefix}:processing:{worker_id}"

    def lease(self, job_id: str) -> str:
        """String naming the worker currently running a job; expires with its heartbeat."""
        return f"{self.prefix}:lease:{job_id}"

    def job(self, job_id: str) -> str:
        """Hash of a job's bookkeeping: attempts, outcome, model_url, the current run's token."""
        return f"{self.prefix}:job:{job_id}"

    def delayed(self) -> str:
        """Sorted set of raw messages waiting for a retry (or an ETA), scored by due time."""
        return f"{self.prefix}:delayed"

    def artifact(self, job_id: str) -> str:
        """Hash caching a job's finished files between attempts, so a retry does not redo inference."""
        return f"{self.prefix}:artifact:{job_id}"

    def discarded_files(self) -> str:
        """Hash job_id -> the storage keys (JSON list) of a failed job's files still to be removed."""
        return f"{self.prefix}:discarded-files"

    def asset_cache(self, address: str) -> str:
        """String (JSON, kept `ASSET_CACHE_TTL_S`) naming the stored files of a finished asset by its
        content address (``client_worker.pipeline.content_address``), for later jobs to copy."""
        return f"{self.prefix}:asset-cache:{address}"

    def asset_making(self, address: str) -> str:
        """String naming the job that is making the asset of a content address (a short TTL its maker
        renews), so that the other jobs of the address wait for its entry instead of running the model."""
        return f"{self.prefix}:asset-making:{address}"

    def status(self, job_id: str) -> str:
        """Hash of the latest status reported for a job (what the webhook said or will say)."""
        return f"{self.prefix}:status:{job_id}"

    def status_channel(self) -> str:
        """Pub/sub channel receiving every status update as JSON."""
        return f"{self.prefix}:status"

    def outbox(self) -> str:
        """Hash job_id -> the latest undelivered webhook event (JSON)."""
        return f"{self.prefix}:outbox"

    def outbox_due(self) -> str:
        """Sorted set job_id -> when the outbox entry is next tried."""
        return f"{self.prefix}:outbox:due"

    def outbox_waiting(self) -> str:
        """Set of the job ids whose outbox entry waits out a back-off after failed deliveries (and
        is not being sent): what a backend that answers again gets at once."""
        return f"{self.prefix}:outbox:waiting"

    def rejected(self) -> str:
        """List of the messages that are no job for this worker (`REJECTED_LIST` by default)."""
        return f"{self.prefix}:rejected"

    def dead_letters(self) -> str:
        """List of the jobs that failed for good (`DEAD_LETTER_LIST` by default)."""
        return f"{self.prefix}:dead"

    def celery_results(self) -> str:
        """Hash task_id -> Celery result meta (JSON) still to be written to the result backend."""
        return f"{self.prefix}:celery-results"
