"""Structured logs: one JSON object per line on stderr, for log shippers.

Call sites pass context with `extra={...}` (job_id, stage, error...); every such key becomes a
field of the line. Secrets never reach a log line because settings hold them as `SecretStr`
and the start-up line logs `loggable_settings()`, which masks them and URL passwords.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

from client_worker.config import Settings

_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "hpack", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (Redis URLs often carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def loggable_settings(settings: Settings) -> dict[str, object]:
    """The settings for a start-up log line: secrets masked, credentials stripped from URLs."""
    summary = settings.model_dump(mode="json")
    summary["redis_url"] = redact_url(settings.redis_url)
    for name in ("supabase_service_role_key", "webhook_secret"):
        summary[name] = "***" if getattr(settings, name) is not None else None
    return summary
