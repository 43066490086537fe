"""Turn one element of the Redis list into a job, whatever producer wrote it.

Accepted shapes (docs/facts.md, "Celery messages on Redis"):

* the guide's "Manually Queue a Test Job": `{"task", "id", "args", "kwargs": {job payload}}`;
* a bare job payload: `{"job_id", "shop", "product_id", "image_urls", ...}`;
* Celery protocol v2 envelopes (`headers.task`, body `[args, kwargs, embed]`) as written by
  `celery.send_task`, celery.node and node-celery-ts: body base64 or plain, optionally compressed;
* Celery protocol v1 envelopes (empty headers, body an object with `task`, `id`, `args`, `kwargs`).

Parsing is split in two so that the caller can treat the failures differently: `parse_message`
raises `RejectedMessage` for an element that is not one of our tasks at all (moved aside to the
rejected list), and `parse_job` raises `MalformedJob` for one of our tasks whose payload is wrong
(reported to the backend as `failed` when it names a job id).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import json
import lzma
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from client_worker.errors import PermanentJobError

_DECOMPRESSORS = {
    "application/x-gzip": zlib.decompress,
    "application/x-zlib": zlib.decompress,
    "zlib": zlib.decompress,
    "gzip": zlib.decompress,
    "application/x-bz2": bz2.decompress,
    "bzip2": bz2.decompress,
    "bzip": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "lzma": lzma.decompress,
    "xz": lzma.decompress,
}

_JOB_FIELDS = ("job_id", "jobId", "image_urls", "imageUrls")


class RejectedMessage(Exception):
    """The element is not a job for us (unparsable, another task, unsupported encoding)."""


@dataclass(frozen=True)
class TaskMessage:
    """What a producer asked for, independent of the wire format it used."""

    task_name: str
    task_id: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    wire_format: str
    eta: datetime | None = None
    expires: datetime | None = None


class Job(BaseModel):
    """A validated job payload (the guide's "Job Payload Structure"); unknown keys are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    job_id: str = Field(min_length=1, validation_alias=AliasChoices("job_id", "jobId"))
    shop: str = Field(min_length=1, validation_alias=AliasChoices("shop", "shopDomain", "shop_domain"))
    product_id: str = Field(min_length=1, validation_alias=AliasChoices("product_id", "productId"))
    image_urls: list[str] = Field(min_length=1, validation_alias=AliasChoices("image_urls", "imageUrls"))
    variant_id: str | None = Field(default=None, validation_alias=AliasChoices("variant_id", "variantId"))
    product_handle: str | None = Field(
        default=None, validation_alias=AliasChoices("product_handle", "productHandle")
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    quality: str | None = Field(default=None, validation_alias=AliasChoices("quality", "preset"))

    @field_validator("job_id", "product_id", "variant_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        """Numeric ids from JavaScript producers arrive as numbers; they are ids all the same."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("image_urls", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("must be a list of URL strings, e.g. [\"https://cdn.shopify.com/...jpg\"], not a string")
        if isinstance(value, list):
            if not value:
                raise ValueError("is empty; list at least one product image URL")
            for index, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    raise ValueError(f"item {index} is {item!r}; every item must be a non-empty URL string")
            return [item.strip() for item in value]
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        return {} if value is None else value


class MalformedJob(PermanentJobError):
    """Our task, but its payload cannot be processed; `job_id` is set when the payload names one."""

    def __init__(self, message: str, job_id: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id


def parse_message(raw: bytes | str, task_name: str) -> TaskMessage:
    """Decode one list element; raises `RejectedMessage` with the reason if it is not our task."""
    envelope = _json_object(raw, "message")
    if "body" in envelope and ("properties" in envelope or "headers" in envelope):
        message = _from_celery_envelope(envelope)
    elif "task" in envelope:
        message = _from_task_object(envelope, "guide")
    elif any(key in envelope for key in _JOB_FIELDS):
        message = TaskMessage(
            task_name=task_name, task_id=None, args=[], kwargs=envelope, wire_format="bare"
        )
    else:
        keys = ", ".join(sorted(envelope)[:10]) or "none"
        raise RejectedMessage(
            f"not a job: a JSON object without 'task', Celery 'body'/'properties' or 'job_id' (keys: {keys})"
        )
    if message.task_name != task_name:
        raise RejectedMessage(f"task {message.task_name!r} is not handled by this worker (it handles {task_name!r})")
    return message


def parse_job(message: TaskMessage) -> Job:
    """Validate the job payload of a task; raises `MalformedJob` with an actionable message."""
    payload = _payload(message)
    job_id = _loose_job_id(payload)
    try:
        return Job.model_validate(payload)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]) or "payload"
            text = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "missing":
                text = "is required"
            problems.append(f"'{name}' {text}")
        raise MalformedJob("malformed job: " + "; ".join(problems), job_id) from None


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
    value = payload.get("job_id", payload.get("jobId"))
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RejectedMessage(f"{what} is not UTF-8 text") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise RejectedMessage(f"{what} is not JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(value, dict):
        raise RejectedMessage(f"{what} is JSON {type(value).__name__}, expected an object")
    return value


def _from_celery_envelope(envelope: dict[str, Any]) -> TaskMessage:
    headers = envelope.get("headers") or {}
    properties = envelope.get("properties") or {}
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise RejectedMessage("Celery envelope with non-object 'headers' or 'properties'")
    body = _decode_body(envelope, headers, properties)
    if headers.get("task"):
        if not isinstance(body, list) or not body:
            raise RejectedMessage("Celery protocol 2 body is not [args, kwargs, embed]")
        args = body[0] if len(body) > 0 else []
        kwargs = body[1] if len(body) > 1 else {}
        if not isinstance(args, list) or not isinstance(kwargs, (dict, type(None))):
            raise RejectedMessage("Celery protocol 2 body: args must be a list and kwargs an object")
        task_id = headers.get("id") or properties.get("correlation_id") or properties.get("correlationId")
        return TaskMessage(
            task_name=str(headers["task"]),
            task_id=str(task_id) if task_id else None,
            args=args,
            kwargs=kwargs or {},
            wire_format="celery-v2",
            eta=_timestamp(headers.get("eta"), "eta"),
            expires=_timestamp(headers.get("expires"), "expires"),
        )
    if isinstance(body, dict) and "task" in body:
        return _from_task_object(body, "celery-v1")
    raise RejectedMessage("Celery envelope without a task name (neither headers.task nor a v1 body)")


def _decode_body(envelope: dict[str, Any], headers: dict[str, Any], properties: dict[str, Any]) -> Any:
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
        decompress = _DECOMPRESSORS.get(str(compression).lower())
        if decompress is None:
            raise RejectedMessage(
                f"Celery body compressed with {compression!r}; supported: zlib/gzip, bzip2, lzma"
            )
        try:
            data = decompress(data)
        except (zlib.error, OSError, lzma.LZMAError, ValueError) as error:
            raise RejectedMessage(f"Celery body cannot be decompressed with {compression!r}: {error}") from None
    content_type = str(envelope.get("content-type") or "application/json").lower()
    if "json" not in content_type:
        raise RejectedMessage(
            f"Celery body has content-type {content_type!r}; only JSON is accepted (send with serializer='json')"
        )
    text_encoding = str(envelope.get("content-encoding") or "utf-8")
    try:
        text = data.decode(text_encoding)
    except (LookupError, UnicodeDecodeError):
        raise RejectedMessage(f"Celery body is not valid {text_encoding!r} text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RejectedMessage(f"Celery body is not JSON ({error.msg} at position {error.pos})") from None


def _from_task_object(body: dict[str, Any], wire_format: str) -> TaskMessage:
    """The guide's simplified shape and Celery v1 bodies share the same keys."""
    args = body.get("args") or []
    kwargs = body.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise RejectedMessage(f"{wire_format} task: 'args' must be a list and 'kwargs' an object")
    task_id = body.get("id")
    return TaskMessage(
        task_name=str(body["task"]),
        task_id=str(task_id) if task_id else None,
        args=args,
        kwargs=kwargs,
        wire_format=wire_format,
        eta=_timestamp(body.get("eta"), "eta"),
        expires=_timestamp(body.get("expires"), "expires"),
    )


def _timestamp(value: object, name: str) -> datetime | None:
    """Celery ISO-8601 times; naive ones are UTC (protocol 2 has no local times)."""
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise RejectedMessage(f"'{name}' is not an ISO-8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

