"""The Redis queue's side of a job's attempts: where `processing` reports progress and keeps its files.

Progress is a status event (``status.store``) written only while the attempt's run is the job's
current one (``jobs.queue``), then delivered as a webhook in the background. The finished files
(and, once uploaded, their URLs) are kept in a hash under the job id for `ARTIFACT_TTL_S`, so a
retry after a storage outage uploads the same bytes again instead of re-running the model, and a
retry after a crash following the uploads does not upload at all; the consumer drops the hash in
the transaction that acknowledges the job as completed (`forget`).
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import JobQueue, Writes
from client_worker.pipeline.photo_to_asset import Asset, AssetFile
from client_worker.processing import KeptFiles
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender

ARTIFACT_TTL_S = 24 * 3600


class RedisAttemptRecords:
    """`processing.AttemptRecords` on Redis, for jobs from the Redis queue."""

    def __init__(self, redis: Redis, queue: JobQueue, status: StatusStore, webhooks: WebhookSender) -> None:
        self.redis = redis
        self.keys: RedisKeys = queue.keys
        self.queue = queue
        self.status = status
        self.webhooks = webhooks

    async def progress(self, job_id: str, token: str, metadata: dict[str, Any]) -> None:
        event = StatusEvent(job_id, "processing", metadata=metadata)
        if await self.queue.record_progress(job_id, token, self.status.writes(event),
                                            watching=[self.keys.status(job_id)]):
            self.webhooks.deliver_soon(job_id)

    async def kept(self, job_id: str) -> KeptFiles | None:
        fields = _text_keys(await self.redis.hgetall(self.keys.artifact(job_id)))
        if "files" not in fields:
            return None
        files = tuple(
            AssetFile(spec["role"], spec["extension"], spec["content_type"], fields[f"file:{spec['role']}"])
            for spec in json.loads(fields["files"])
        )
        urls = {name[len("url:"):]: url.decode() for name, url in fields.items() if name.startswith("url:")}
        return KeptFiles(Asset(files, json.loads(fields["details"])), urls)

    async def keep(self, job_id: str, asset: Asset) -> None:
        key = self.keys.artifact(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            _store_asset(pipe, key, asset)
            pipe.expire(key, ARTIFACT_TTL_S)
            await pipe.execute()

    async def keep_url(self, job_id: str, role: str, url: str) -> None:
        await self.redis.hset(self.keys.artifact(job_id), f"url:{role}", url)

    async def uploaded(self, job_id: str) -> bool:
        """True when an earlier attempt uploaded every file of the job: only its completion is missing."""
        kept = await self.kept(job_id)
        return kept is not None and all(file.role in kept.urls for file in kept.asset.files)

    def forget(self, job_id: str) -> Writes:
        """Writes for the completion transaction: drop the job's kept files."""
        key = self.keys.artifact(job_id)
        return lambda pipe: pipe.delete(key)


def _store_asset(pipe: Pipeline, key: str, asset: Asset) -> None:
    files = [{"role": f.role, "extension": f.extension, "content_type": f.content_type} for f in asset.files]
    mapping: dict[str, bytes | str] = {"details": json.dumps(asset.details), "files": json.dumps(files)}
    mapping.update({f"file:{f.role}": f.data for f in asset.files})
    pipe.hset(key, mapping=mapping)


def _text_keys(cached: dict[bytes, bytes]) -> dict[str, bytes]:
    return {key.decode(): value for key, value in cached.items()}
