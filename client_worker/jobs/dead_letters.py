"""What the worker moved aside, for operators: list the rejected and dead-letter lists, replay them.

Both lists hold one JSON record per message, newest first: `reason`, `worker`, `at` (unix time)
and the message itself as `raw` (or `raw_base64` when it was not UTF-8); dead letters add
`job_id` and `attempts`. Replaying a record removes it and pushes its message onto the queue as
a producer would, in one atomic step, so a record is replayed once even when two operators try;
a replayed dead letter runs afresh, with all its attempts.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from client_worker.config import Settings
from client_worker.jobs.keys import RedisKeys

Which = Literal["dead", "rejected"]

_REPLAY = """
-- KEYS: the list, the queue, the job hash (or '').  ARGV: record, raw message.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
if KEYS[3] ~= '' then redis.call('HDEL', KEYS[3], 'failed_delivery') end
return 1
"""


@dataclass(frozen=True)
class MovedAside:
    """One record of a list: its position (0 = newest), its fields and the message it holds."""

    index: int
    stored: bytes
    fields: dict[str, Any]

    @property
    def raw(self) -> bytes:
        if "raw_base64" in self.fields:
            return base64.b64decode(self.fields["raw_base64"])
        return str(self.fields.get("raw", "")).encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """What an operator reads: everything but the message, plus its size and beginning."""
        shown = {key: value for key, value in self.fields.items() if key not in ("raw", "raw_base64")}
        preview = self.raw[:160].decode("utf-8", "replace")
        return {"index": self.index, **shown, "bytes": len(self.raw), "message": preview}


class DeadLetters:
    """The two lists of one deployment (`REJECTED_LIST`, `DEAD_LETTER_LIST`)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.queue = settings.queue_name
        self.keys = RedisKeys(settings.key_prefix)
        self.names: dict[Which, str] = {"dead": settings.dead_letter_list, "rejected": settings.rejected_list}
        self._replay = redis.register_script(_REPLAY)

    async def records(self, which: Which, limit: int = 0) -> list[MovedAside]:
        """The newest ``limit`` records (all with 0)."""
        stored = await self.redis.lrange(self.names[which], 0, limit - 1 if limit > 0 else -1)
        return [MovedAside(index, item, _fields(item)) for index, item in enumerate(stored)]

    async def replay(self, which: Which, records: list[MovedAside]) -> int:
        """Put the messages of ``records`` back on the queue; returns how many were still there."""
        replayed = 0
        for record in records:
            job_id = record.fields.get("job_id")
            job_key = self.keys.job(str(job_id)) if job_id else ""
            replayed += int(await self._replay(keys=[self.names[which], self.queue, job_key],
                                               args=[record.stored, record.raw]))
        return replayed


def _fields(stored: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(stored)
    except ValueError:
        return {"reason": "(this record is not JSON)", "raw_base64": base64.b64encode(stored).decode("ascii")}
    return fields if isinstance(fields, dict) else {"reason": "(this record is not a JSON object)"}
