"""The Redis queue's side of a job's attempts: where `processing` reports progress and keeps its files.

Progress is a status event (``status.store``) written only while the attempt's run is the job's
current one (``jobs.queue``), then delivered as a webhook in the background. The finished files
(and, once uploaded, their URLs) are kept in a hash under the job id for `ARTIFACT_TTL_S`, so a
retry after a storage outage uploads the same bytes again instead of re-running the model, and a
retry after a crash following the uploads does not upload at all; the consumer drops the hash in
the transaction that acknowledges the job as completed (`forget`).

A job that ends failed leaves nothing of its own behind. Before any file of a job is stored
(uploaded, or copied from the asset cache) its storage key is noted in the hash (`storing`); the
transaction that fails the job drops the hash and moves those keys to the discarded-files hash
(`discard`), and the files are then removed (`remove_discarded`: by the consumer right after the
failure, and by every worker's maintenance for what a storage outage or a crash left there). The
keys are moved in the failing transaction, before any file is removed, so that no later attempt
can find a record of a file that is gone. A new run of the same job id (a replay) owns the keys
again: noting them drops a pending removal, and a removal is never done while a run of the job is
current or once it completed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from client_worker.errors import JobError
from client_worker.jobs.keys import RedisKeys
from client_worker.jobs.queue import JobQueue, Writes
from client_worker.logs import OutageLog
from client_worker.pipeline.photo_to_asset import Asset, AssetFile
from client_worker.processing import KeptFiles
from client_worker.status.store import StatusEvent, StatusStore
from client_worker.status.webhook import WebhookSender
from client_worker.storage import Storage

log = logging.getLogger(__name__)

ARTIFACT_TTL_S = 24 * 3600
STORED = "stored:"
"""Prefix of the artifact hash's fields that name a storage key holding (or about to hold) a file of the job."""

_DISCARD = """
-- KEYS: artifact hash, discarded-files hash.  ARGV: job id, stored-key field prefix.
-- The job's noted keys (with any still pending from an earlier failure) wait for removal.
local keys, seen = {}, {}
local pending = redis.call('HGET', KEYS[2], ARGV[1])
if pending then
  for _, key in ipairs(cjson.decode(pending)) do
    if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
  end
end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #ARGV[2]) == ARGV[2] then
    local key = string.sub(field, #ARGV[2] + 1)
    if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
  end
end
if #keys > 0 then redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(keys)) end
redis.call('DEL', KEYS[1])
return #keys
"""

_REMOVABLE = """
-- KEYS: discarded-files hash, job hash.  ARGV: job id.
-- The keys to remove now, or nothing: a run of the job is current (it owns them), or the job
-- completed since (they hold its files: the entry is dropped).
local pending = redis.call('HGET', KEYS[1], ARGV[1])
if not pending then return false end
local job = redis.call('HMGET', KEYS[2], 'outcome', 'run')
if job[2] then return false end
if job[1] == 'completed' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
return pending
"""

_REMOVED = """
-- KEYS: discarded-files hash.  ARGV: job id, the entry that was removed.  Only what was removed leaves.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


class RedisAttemptRecords:
    """`processing.AttemptRecords` on Redis, for jobs from the Redis queue."""

    def __init__(self, redis: Redis, queue: JobQueue, status: StatusStore, webhooks: WebhookSender,
                 storage: Storage) -> None:
        self.redis = redis
        self.keys: RedisKeys = queue.keys
        self.queue = queue
        self.status = status
        self.webhooks = webhooks
        self.storage = storage
        self._removable = redis.register_script(_REMOVABLE)
        self._removed = redis.register_script(_REMOVED)
        self._cursor = 0
        self._storage_outage = OutageLog(log, "the files of a failed job could not be removed yet; a later pass retries")

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

    async def storing(self, job_id: str, keys: Sequence[str]) -> None:
        key = self.keys.artifact(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={STORED + stored: "1" for stored in keys})
            pipe.expire(key, ARTIFACT_TTL_S)
            pipe.hdel(self.keys.discarded_files(), job_id)  # this run owns the keys now
            await pipe.execute()

    async def uploaded(self, job_id: str) -> bool:
        """True when an earlier attempt uploaded every file of the job: only its completion is missing."""
        kept = await self.kept(job_id)
        return kept is not None and all(file.role in kept.urls for file in kept.asset.files)

    def forget(self, job_id: str) -> Writes:
        """Writes for the completion transaction: drop the job's kept files."""
        key = self.keys.artifact(job_id)
        return lambda pipe: pipe.delete(key)

    def discard(self, job_id: str) -> Writes:
        """Writes for the transaction that fails the job: drop its records, and hand the keys of
        its stored files to `remove_discarded`."""
        keys = [self.keys.artifact(job_id), self.keys.discarded_files()]
        return lambda pipe: pipe.eval(_DISCARD, len(keys), *keys, job_id, STORED)

    async def remove_discarded(self, job_id: str | None = None, batch: int = 100) -> int:
        """Remove the files of failed jobs (of ``job_id`` only, when given); returns how many jobs'
        files were removed. What the storage cannot remove now stays for the next pass (logged)."""
        table = self.keys.discarded_files()
        if job_id is not None:
            job_ids = [job_id]
        else:  # a pass looks at some entries, the next pass goes on from there
            self._cursor, fields = await self.redis.hscan(table, self._cursor, count=batch)
            job_ids = [name.decode() for name in fields]
        removed = 0
        for job in job_ids[:batch]:
            pending = await self._removable(keys=[table, self.keys.job(job)], args=[job])
            if pending is None:
                continue
            stored = json.loads(pending)
            try:
                await self.storage.delete(stored)
            except JobError as error:
                self._storage_outage.failed(error, job_id=job)
                continue
            self._storage_outage.succeeded()
            await self._removed(keys=[table], args=[job, pending])
            removed += 1
            log.info("removed the files of a failed job", extra={"job_id": job, "keys": stored})
        return removed


def _store_asset(pipe: Pipeline, key: str, asset: Asset) -> None:
    files = [{"role": f.role, "extension": f.extension, "content_type": f.content_type} for f in asset.files]
    mapping: dict[str, bytes | str] = {"details": json.dumps(asset.details), "files": json.dumps(files)}
    mapping.update({f"file:{f.role}": f.data for f in asset.files})
    pipe.hset(key, mapping=mapping)


def _text_keys(cached: dict[bytes, bytes]) -> dict[str, bytes]:
    return {key.decode(): value for key, value in cached.items()}
