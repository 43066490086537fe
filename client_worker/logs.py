"""Structured logs: one JSON object per line on stderr, for log shippers.

Call sites pass context with `extra={...}` (job_id, stage, error...); every such key becomes a
field of the line. Each finished line goes through the settings' `Redaction`, so no credential
reaches a log, whether it came from the settings or inside an exception text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from client_worker.redaction import Redaction

_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra, "exc"?}` on one line, credentials masked."""

    def __init__(self, redaction: Redaction | None = None) -> None:
        super().__init__()
        self.redaction = redaction or Redaction(())

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
        return self.redaction(json.dumps(line, default=str, ensure_ascii=False))


def configure_logging(level: str = "INFO", redaction: Redaction | None = None) -> None:
    """Send every logger's records to stderr as JSON lines (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redaction))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "hpack", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
