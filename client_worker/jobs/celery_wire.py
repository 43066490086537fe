"""Celery's wire format on Redis: one list element, whatever producer wrote it, as a `TaskMessage`.

Accepted shapes (docs/facts.md, "Celery messages on Redis"):

* the guide's "Manually Queue a Test Job": `{"task", "id", "args", "kwargs": {job payload}}`;
* a bare job payload: `{"job_id", "shop", "product_id", "image_urls", ...}`;
* Celery protocol v2 envelopes (`headers.task`, body `[args, kwargs, embed]`) as written by
  `celery.send_task`, celery.node and node-celery-ts: body base64 or plain, optionally compressed;
* Celery protocol v1 envelopes (empty headers, body an object with `task`, `id`, `args`, `kwargs`).

`parse_message` turns every failure, whatever its cause, into a `RejectedMessage` within
`MessageLimits`, so no element can make the worker loop on it. The job inside the message is
``client_worker.jobs.intake``'s business.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from client_worker.jobs.limits import COMPRESSION_NAMES, LimitExceeded, MessageLimits, shown

_JOB_FIELDS = ("job_id", "jobId", "image_urls", "imageUrls")

Signature = dict[str, Any]
"""A Celery task signature as the embed carries it: `task`, `args`, `kwargs`, `options`, ..."""


class RejectedMessage(Exception):
    """The element is not a job for us (unparsable, another task, unsupported encoding, over a limit)."""


@dataclass(frozen=True)
class TaskMessage:
    """What a producer asked for, independent of the wire format it used.

    `delivery_id` names this delivery: the task id, or a digest of the raw element when the
    producer gave none. `problem` is set when the task's options cannot be honoured (an
    unreadable `eta`); the job then fails with it. `callbacks`, `errbacks` and `chain` are the
    Celery canvas to continue with (the chain in reverse order, as Celery sends it).
    """

    task_name: str
    task_id: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    wire_format: str
    delivery_id: str = ""
    eta: datetime | None = None
    expires: datetime | None = None
    problem: str | None = None
    callbacks: list[Signature] = field(default_factory=list)
    errbacks: list[Signature] = field(default_factory=list)
    chain: list[Signature] = field(default_factory=list)
    priority: int = 0
    root_id: str | None = None
    ignore_result: bool = False


def parse_message(raw: bytes | str, task_name: str, limits: MessageLimits | None = None) -> TaskMessage:
    """Decode one list element; raises `RejectedMessage` with the reason if it is not our task."""
    limits = limits or MessageLimits()
    try:
        message = _parse(raw, task_name, limits)
    except RejectedMessage:
        raise
    except LimitExceeded as error:
        raise RejectedMessage(str(error)) from None
    except RecursionError:
        raise RejectedMessage("the message nests too deeply to be parsed") from None
    except Exception as error:  # noqa: BLE001 - whatever else an element does to a parser, it is moved aside once
        raise RejectedMessage(f"the message cannot be parsed ({type(error).__name__})") from None
    if message.task_name != task_name:
        raise RejectedMessage(
            f"task {shown(message.task_name)} is not handled by this worker (it handles {task_name!r})"
        )
    return message


def _parse(raw: bytes | str, task_name: str, limits: MessageLimits) -> TaskMessage:
    limits.check_size(raw, "the message")
    envelope = _json_object(raw, "message", limits)
    if "body" in envelope and ("properties" in envelope or "headers" in envelope):
        message = _from_celery_envelope(envelope, limits)
    elif "task" in envelope:
        message = _from_task_object(envelope, "guide")
    elif any(key in envelope for key in _JOB_FIELDS):
        message = TaskMessage(task_name=task_name, task_id=None, args=[], kwargs=envelope, wire_format="bare")
    else:
        keys = ", ".join(shown(key) for key in sorted(envelope)[:10]) or "none"
        raise RejectedMessage(
            f"not a job: a JSON object without 'task', Celery 'body'/'properties' or 'job_id' (keys: {keys})"
        )
    delivery = message.task_id or "sha256:" + hashlib.sha256(_as_bytes(raw)).hexdigest()
    return dataclasses.replace(message, delivery_id=delivery)


def _json_object(raw: bytes | str, what: str, limits: MessageLimits) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RejectedMessage(f"{what} is not UTF-8 text") from None
    try:
        value = limits.loads(raw.removeprefix("\ufeff"), what)
    except json.JSONDecodeError as error:
        raise RejectedMessage(f"{what} is not JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(value, dict):
        raise RejectedMessage(f"{what} is JSON {type(value).__name__}, expected an object")
    return value


def _from_celery_envelope(envelope: dict[str, Any], limits: MessageLimits) -> TaskMessage:
    headers = envelope.get("headers") or {}
    properties = envelope.get("properties") or {}
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise RejectedMessage("Celery envelope with non-object 'headers' or 'properties'")
    body = _decode_body(envelope, headers, properties, limits)
    priority = _priority(properties.get("priority"))
    if headers.get("task"):
        if not isinstance(body, list) or not body:
            raise RejectedMessage("Celery protocol 2 body is not [args, kwargs, embed]")
        args = body[0] if len(body) > 0 else []
        kwargs = body[1] if len(body) > 1 else {}
        embed = body[2] if len(body) > 2 else None
        if not isinstance(args, list) or not isinstance(kwargs, (dict, type(None))):
            raise RejectedMessage("Celery protocol 2 body: args must be a list and kwargs an object")
        task_id = headers.get("id") or properties.get("correlation_id") or properties.get("correlationId")
        times = _Times(headers.get("eta"), headers.get("expires"))
        canvas = _Canvas(embed if isinstance(embed, dict) else {}, "embed")
        problems = [problem for problem in (times.problem, canvas.problem) if problem]
        if embed is not None and not isinstance(embed, dict):
            problems.append("the Celery embed (the body's third item) is not an object")
        return TaskMessage(
            task_name=_text(headers["task"]),
            task_id=_text(task_id) if task_id else None,
            args=args,
            kwargs=kwargs or {},
            wire_format="celery-v2",
            eta=times.eta,
            expires=times.expires,
            problem="; ".join(problems) or None,
            callbacks=canvas.callbacks,
            errbacks=canvas.errbacks,
            chain=canvas.chain,
            priority=priority,
            root_id=_text(headers["root_id"]) if headers.get("root_id") else None,
            ignore_result=headers.get("ignore_result") is True,
        )
    if isinstance(body, dict) and "task" in body:
        return dataclasses.replace(_from_task_object(body, "celery-v1"), priority=priority)
    raise RejectedMessage("Celery envelope without a task name (neither headers.task nor a v1 body)")


def _decode_body(
    envelope: dict[str, Any], headers: dict[str, Any], properties: dict[str, Any], limits: MessageLimits
) -> Any:
    """The body as kombu decodes it: `body_encoding`, then `compression`, then the content type.

    For a content type with a registered decoder (JSON) kombu ignores `content-encoding`: the
    bytes are UTF-8 (docs/facts.md, "Celery messages on Redis"). node-celery-ts writes `base64`
    there for compressed bodies, which a Celery worker runs all the same.
    """
    body = envelope["body"]
    if isinstance(body, (dict, list)):
        return body
    if not isinstance(body, str):
        raise RejectedMessage(f"Celery body is JSON {type(body).__name__}, expected a string")
    encoding = str(properties.get("body_encoding") or "").lower()
    data: bytes
    if encoding == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RejectedMessage("Celery body says body_encoding=base64 but is not valid base64") from None
    else:
        data = body.encode("utf-8")
    compression = headers.get("compression")
    if compression:
        method = COMPRESSION_NAMES.get(str(compression).lower())
        if method is None:
            raise RejectedMessage(
                f"Celery body compressed with {shown(compression)}; supported: zlib/gzip, bzip2, lzma"
            )
        try:
            data = limits.decompress(data, method)
        except LimitExceeded:
            raise
        except (ValueError, OSError, EOFError) as error:
            raise RejectedMessage(f"Celery body cannot be decompressed with {compression!r}: {error}") from None
    content_type = str(envelope.get("content-type") or "application/json").lower()
    if "json" not in content_type:
        raise RejectedMessage(
            f"Celery body has content-type {shown(content_type)}; only JSON is accepted (send with serializer='json')"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RejectedMessage("Celery body is not UTF-8 JSON") from None
    limits.check_size(text, "the Celery body")
    try:
        return limits.loads(text.removeprefix("\ufeff"), "the Celery body")
    except json.JSONDecodeError as error:
        raise RejectedMessage(f"Celery body is not JSON ({error.msg} at position {error.pos})") from None


def _from_task_object(body: dict[str, Any], wire_format: str) -> TaskMessage:
    """The guide's simplified shape and Celery v1 bodies share the same keys."""
    args = body.get("args") or []
    kwargs = body.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise RejectedMessage(f"{wire_format} task: 'args' must be a list and 'kwargs' an object")
    task_id = body.get("id")
    times = _Times(body.get("eta"), body.get("expires"))
    canvas = _Canvas(body, "body")
    problems = [problem for problem in (times.problem, canvas.problem) if problem]
    return TaskMessage(
        task_name=_text(body["task"]),
        task_id=_text(task_id) if task_id else None,
        args=args,
        kwargs=kwargs,
        wire_format=wire_format,
        eta=times.eta,
        expires=times.expires,
        problem="; ".join(problems) or None,
        callbacks=canvas.callbacks,
        errbacks=canvas.errbacks,
    )


class _Times:
    """A task's `eta` and `expires`: Celery ISO-8601 times, naive ones UTC (protocol 2 has no
    local times). An unreadable one is a `problem` of the job, not a reason to drop it."""

    def __init__(self, eta: object, expires: object) -> None:
        self.problems: list[str] = []
        self.eta = self._moment(eta, "eta")
        self.expires = self._moment(expires, "expires")
        self.problem = "; ".join(self.problems) or None

    def _moment(self, value: object, name: str) -> datetime | None:
        if value in (None, ""):
            return None
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.problems.append(f"the Celery '{name}' is not an ISO-8601 time: {shown(value)}")
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class _Canvas:
    """`callbacks`, `errbacks` and `chain` of an embed (v2) or body (v1): lists of signatures."""

    def __init__(self, holder: dict[str, Any], where: str) -> None:
        self.problems: list[str] = []
        self.callbacks = self._signatures(holder.get("callbacks"), f"{where}.callbacks")
        self.errbacks = self._signatures(holder.get("errbacks"), f"{where}.errbacks")
        self.chain = self._signatures(holder.get("chain"), f"{where}.chain")
        self.problem = "; ".join(self.problems) or None

    def _signatures(self, value: object, name: str) -> list[Signature]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(item, dict) and isinstance(item.get("task"), str) for item in value
        ):
            self.problems.append(f"the Celery {name} is not a list of task signatures")
            return []
        canvases = sorted({str(item["subtask_type"]) for item in value if item.get("subtask_type")})
        if canvases:
            self.problems.append(
                f"the Celery {name} holds a {'/'.join(canvases)}, which this worker cannot continue: "
                "link plain task signatures"
            )
            return []
        return value


def _priority(value: object) -> int:
    """The priority property as kombu reads it: a number clamped to 0–9, anything else 0."""
    try:
        return max(0, min(int(value), 9))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _as_bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
