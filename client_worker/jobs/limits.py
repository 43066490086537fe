"""Bounds on what one queue message may hold, enforced while it is decoded.

A message is untrusted input. A compressed body can expand a thousandfold, JSON can nest a
hundred thousand levels deep (Python's parser then dies with ``RecursionError``) and an integer
literal can be longer than Python converts (``ValueError``). Each bound is a setting
(``MESSAGE_MAX_*``), checked before the expensive step it protects, so decoding one message never
holds more than ``MESSAGE_MAX_DECOMPRESSED_BYTES`` and never recurses deeper than
``MESSAGE_MAX_DEPTH``.
"""

from __future__ import annotations

import bz2
import json
import lzma
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from client_worker.config import Settings

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
"""JSON string literals (skipped whole, so brackets inside them do not count) and brackets."""


class LimitExceeded(ValueError):
    """A message goes beyond one of the bounds; the text says which and by how much."""


@dataclass(frozen=True)
class MessageLimits:
    """The ``MESSAGE_MAX_*`` settings, and ``IMAGE_URLS_MAX``."""

    max_bytes: int = Settings.default("message_max_bytes")
    max_decompressed_bytes: int = Settings.default("message_max_decompressed_bytes")
    max_depth: int = Settings.default("message_max_depth")
    image_urls_max: int = Settings.default("image_urls_max")
    """The most image URLs a job may list (``IMAGE_URLS_MAX``): a job with more fails at intake."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageLimits:
        return cls(settings.message_max_bytes, settings.message_max_decompressed_bytes, settings.message_max_depth,
                   settings.image_urls_max)

    def check_size(self, data: bytes | str, what: str) -> None:
        if len(data) > self.max_bytes:
            raise LimitExceeded(f"{what} is {len(data)} bytes, more than MESSAGE_MAX_BYTES ({self.max_bytes})")

    def loads(self, text: str, what: str) -> Any:
        """``json.loads`` within the nesting bound; integer literals too long for Python stay text."""
        depth = nesting_depth(text, self.max_depth)
        if depth > self.max_depth:
            raise LimitExceeded(f"{what} nests deeper than MESSAGE_MAX_DEPTH ({self.max_depth} levels)")
        return json.loads(text, parse_int=_integer)

    def decompress(self, data: bytes, method: str) -> bytes:
        """Decompress with ``method`` (a key of ``DECOMPRESSORS``), stopping at the byte bound."""
        decompressor = DECOMPRESSORS[method]()
        output = decompressor.decompress(data, self.max_decompressed_bytes + 1)
        if len(output) > self.max_decompressed_bytes:
            raise LimitExceeded(
                f"the body expands to more than MESSAGE_MAX_DECOMPRESSED_BYTES ({self.max_decompressed_bytes})"
            )
        if not decompressor.eof:
            raise ValueError("the compressed data is incomplete")
        return output


class _Decompressor(Protocol):
    eof: bool

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


def _zlib() -> _Decompressor:
    """zlib streams (what kombu's ``application/x-gzip`` holds) and gzip files alike."""
    return zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)


DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "zlib": _zlib,
    "bzip2": bz2.BZ2Decompressor,
    "lzma": lzma.LZMADecompressor,
}
"""The compressions kombu registers without extra packages (docs/facts.md, "Celery messages on Redis")."""

COMPRESSION_NAMES = {
    "application/x-gzip": "zlib",
    "application/x-zlib": "zlib",
    "gzip": "zlib",
    "zlib": "zlib",
    "application/x-bz2": "bzip2",
    "bzip2": "bzip2",
    "bzip": "bzip2",
    "application/x-lzma": "lzma",
    "lzma": "lzma",
    "xz": "lzma",
}
"""``headers.compression`` values (kombu's content types and aliases) → ``DECOMPRESSORS`` key."""


def nesting_depth(text: str, stop_above: int) -> int:
    """The deepest nesting of arrays and objects in JSON text (counting stops once past ``stop_above``)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop_above:
                return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def _integer(literal: str) -> int | str:
    """Python refuses to convert integers longer than its digit limit; such a value is kept as
    its digits, so the job it belongs to can still be reported (an id of 5,000 digits then fails
    validation with a message, instead of the whole message being unreadable)."""
    limit = sys.get_int_max_str_digits()
    if limit and len(literal.lstrip("-")) > limit:
        return literal
    return int(literal)


def shown(value: object, limit: int = 80) -> str:
    """A value quoted for a message, shortened so that no input can make the message long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" + (f" ({len(value)} characters)" if isinstance(value, str) else "")
