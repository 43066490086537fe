"""JSON log lines: one object per line, context fields included, secrets absent."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from client_worker.config import load_settings
from client_worker.logs import JsonFormatter
from client_worker.redaction import Redaction, loggable_settings, redact_url


def test_json_line_with_context_and_exception() -> None:
    logger = logging.getLogger("client_worker.test")
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, "job failed: %s", ("HTTP 404",), None,
        extra={"job_id": "job-1", "stage": "download"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line.replace("\\n", "")
    fields = json.loads(line)
    assert fields["msg"] == "job failed: HTTP 404"
    assert (fields["level"], fields["job_id"], fields["stage"]) == ("ERROR", "job-1", "download")
    assert "ValueError: boom" in fields["exc"] and fields["ts"].endswith("+00:00")


def test_the_start_up_line_carries_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        redis_url="redis://:redis-password@cache:6379/0", supabase_url="https://p.supabase.co",
        supabase_service_role_key="service-role-value", webhook_secret="webhook-value",
    )
    logger = logging.getLogger("client_worker.test")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "worker starting", (), None,
                               extra={"settings": loggable_settings(settings)})
    line = JsonFormatter().format(record)
    for secret in ("redis-password", "service-role-value", "webhook-value"):
        assert secret not in line
    assert json.loads(line)["settings"]["supabase_service_role_key"] == "***"


def test_redact_url_keeps_everything_but_the_user_info() -> None:
    assert redact_url("redis://user:pw@host:1/0") == "redis://***@host:1/0"
    assert redact_url("https://token@host/x?q=1") == "https://***@host/x?q=1"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"


def test_a_log_line_masks_every_credential_even_inside_an_exception_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(redis_url='redis://:p%40ss"word@cache:6379/0', backend_url="https://hook:tok3n@api.example",
                             webhook_secret="hmac-value")
    logger = logging.getLogger("client_worker.test")
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, "webhook to %s failed", ("https://hook:tok3n@api.example/x",), None,
        extra={"error": 'AUTH p@ss"word refused', "detail": {"signed with": "hmac-value"}},
    )
    try:
        raise ConnectionError(f"{settings.redis_url} unreachable")
    except ConnectionError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter(Redaction.of(settings)).format(record)
    for secret in ("p%40ss", 'p@ss\\"word', "tok3n", "hmac-value"):
        assert secret not in line
    fields = json.loads(line)
    assert fields["msg"] == "webhook to https://***@api.example/x failed"
    assert fields["error"] == "AUTH *** refused" and fields["detail"] == {"signed with": "***"}
