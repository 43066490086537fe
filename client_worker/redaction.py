"""Credentials never leave the worker in a text: log lines, status records, webhooks, Celery
results, dead letters, health output.

The settings say which of their values are credentials (`Settings.credentials()`, from the types
in `client_worker/config.py`); a `Redaction` replaces every occurrence of each, as written and as
JSON escapes it, with `***`. Exception texts of Redis, HTTP and storage clients can quote a URL
with its password, so whole texts are redacted where they leave, not only the settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from client_worker.config import Settings

MASK = "***"


class Redaction:
    """Replaces each of a set of secrets with `***` in any text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in (secret, json.dumps(secret, ensure_ascii=False)[1:-1])}
        # Longest first, so that `user:password` goes whole before `password` alone.
        self._secrets = sorted(forms, key=len, reverse=True)

    @classmethod
    def of(cls, settings: Settings) -> Redaction:
        return cls(settings.credentials())

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def redact_url(url: str) -> str:
    """The URL with its whole user info masked (`***@host`): a user name can be a token, and
    names the account an attacker would try."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return urlunsplit((parts.scheme, f"{MASK}@{host}", parts.path, parts.query, parts.fragment))


def loggable_settings(settings: Settings) -> dict[str, object]:
    """The settings for a start-up log line: `SecretStr` values and the user info of every
    `CredentialURL` masked."""
    summary = settings.model_dump(mode="json")
    for name in summary:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            summary[name] = MASK
        elif name in Settings.credential_urls() and value is not None:
            summary[name] = redact_url(value)
    return summary
