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


class OutageLog:
    """The log of one step that fails while a dependency is away (Redis, the backend, storage): an
    expected outage, so one WARNING line per failure, without a stack trace, carrying `failures`,
    how many times in a row the step failed. The lines thin out as the count grows (the 1st, 2nd,
    4th, 8th … failure are logged), and the first success after failures says how many there were."""

    def __init__(self, logger: logging.Logger, message: str) -> None:
        self.logger = logger
        self.message = message
        self.failures = 0

    def failed(self, error: BaseException, **extra: object) -> None:
        self.failures += 1
        if self.failures & (self.failures - 1) == 0:
            self.logger.warning(self.message, extra={**extra, "error": str(error) or type(error).__name__,
                                                     "failures": self.failures})

    def succeeded(self) -> None:
        if self.failures:
            self.logger.info("working again after an outage", extra={"step": self.message, "failures": self.failures})
            self.failures = 0


def configure_logging(level: str = "INFO", redaction: Redaction | None = None) -> None:
    """Send every logger's records to stderr as JSON lines (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redaction))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "hpack", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
