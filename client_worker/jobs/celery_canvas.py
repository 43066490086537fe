"""What a Celery worker sends on after a task: its callbacks, the rest of its chain, its errbacks.

A producer's `chain(A, B, C)` sends A with the embed `chain` = [C, B] (reversed); the worker that
ran A sends B with A's result prepended to B's arguments and the remaining chain [C]. On success
the `callbacks` (`link=`) are sent with the result, on failure the `errbacks` (`link_error=`) with
the failed task's id. A signature marked `immutable` gets no extra argument (docs/facts.md,
"Celery canvas and results"). The messages are Celery protocol 2 envelopes, pushed onto the list
kombu would push them onto, so any Celery worker, or this one, runs them.

The messages are written inside the transaction that acknowledges the job, so they are sent
exactly once per outcome.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio.client import Pipeline

from client_worker.jobs.celery_wire import Signature, TaskMessage
from client_worker.jobs.priorities import PriorityLists
from client_worker.jobs.queue import Writes


class CeleryCanvas:
    """Builds the follow-up messages of a task for the queues of one broker."""

    def __init__(self, lists: PriorityLists, default_queue: str) -> None:
        self.lists = lists
        self.default_queue = default_queue
        self.origin = f"{os.getpid()}@{socket.gethostname()}"

    def after_success(self, message: TaskMessage, result: Any) -> Writes:
        """The callbacks, then the next step of the chain, each with ``result`` as first argument."""
        sends = [self._send(message, signature, (result,), []) for signature in message.callbacks]
        if message.chain:
            sends.append(self._send(message, message.chain[-1], (result,), message.chain[:-1]))
        return _pushes(sends)

    def after_failure(self, message: TaskMessage) -> Writes:
        """The errbacks, each with the failed task's id as first argument (Celery's old-style errback)."""
        return _pushes([self._send(message, signature, (message.task_id,), []) for signature in message.errbacks])

    @staticmethod
    def chained_task_ids(message: TaskMessage) -> list[str]:
        """The task ids of the chain's remaining steps: a failure is their result too."""
        return [str(step["options"]["task_id"]) for step in message.chain
                if isinstance(step.get("options"), dict) and step["options"].get("task_id")]

    def _send(
        self, parent: TaskMessage, signature: Signature, prefix: tuple[Any, ...], chain: list[Signature]
    ) -> tuple[str, str]:
        """(list, envelope JSON) of one signature, as `Signature.apply_async` would publish it."""
        options = signature.get("options") if isinstance(signature.get("options"), dict) else {}
        args = list(signature.get("args") or [])
        if not signature.get("immutable"):
            args = [*prefix, *args]
        kwargs = signature.get("kwargs") or {}
        task_id = str(options.get("task_id") or uuid.uuid4())
        queue = options.get("queue") if isinstance(options.get("queue"), str) else self.default_queue
        priority = options.get("priority") if isinstance(options.get("priority"), int) else parent.priority
        embed = {
            "callbacks": _signatures(options.get("link")),
            "errbacks": _signatures(options.get("link_error")),
            "chain": chain or None,
            "chord": None,
        }
        headers = {
            "lang": "py",
            "task": signature["task"],
            "id": task_id,
            "shadow": None,
            "eta": _eta(options),
            "expires": _moment(options.get("expires")),
            "group": options.get("group_id"),
            "group_index": options.get("group_index"),
            "retries": 0,
            "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
            "root_id": parent.root_id or parent.task_id,
            "parent_id": parent.task_id,
            "argsrepr": repr(tuple(args)),
            "kwargsrepr": repr(kwargs),
            "origin": self.origin,
            "ignore_result": bool(options.get("ignore_result", False)),
        }
        properties = {
            "correlation_id": task_id,
            "reply_to": str(options.get("reply_to") or ""),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        body = base64.b64encode(json.dumps([args, kwargs, embed]).encode("utf-8")).decode("ascii")
        envelope = {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                    "headers": headers, "properties": properties}
        return self.lists.for_priority(queue, priority), json.dumps(envelope)


def _pushes(sends: list[tuple[str, str]]) -> Writes:
    def write(pipe: Pipeline) -> None:
        for name, envelope in sends:
            pipe.lpush(name, envelope)

    return write


def _signatures(value: object) -> list[Signature] | None:
    """`link` / `link_error` options: one signature or a list of them."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value:
        return [item for item in value if isinstance(item, dict)]
    return None


def _eta(options: dict[str, Any]) -> str | None:
    """`countdown` (seconds from now) or `eta`, as the ISO time Celery's header holds."""
    countdown = options.get("countdown")
    if isinstance(countdown, (int, float)) and not isinstance(countdown, bool):
        return (datetime.now(UTC) + timedelta(seconds=countdown)).isoformat()
    return _moment(options.get("eta"))


def _moment(value: object) -> str | None:
    """An `expires`/`eta` option: seconds from now, or an ISO time passed on as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (datetime.now(UTC) + timedelta(seconds=value)).isoformat()
    return value if isinstance(value, str) else None
