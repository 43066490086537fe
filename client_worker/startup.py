"""What the worker needs at start, each said in one line when it fails: `StartupError`.

`python -m client_worker run` checks every dependency it cannot work without before it takes a job:
the metrics port (`METRICS_PORT`), Redis (`REDIS_URL`), the Celery result backend
(`RESULT_BACKEND_URL`, when set) and Triton's models (`TRITON_URL`); the storage settings are
checked with the rest of the configuration (`config.load_settings`). One that fails stops the worker
with one line on stderr, `worker not started: …`, naming what failed, where (host and port, never a
user or password) and what to check, and exit status 1. `healthcheck`, `enqueue` and `dead-letters`
say a Redis failure the same way (`redis_problem`).
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout


class StartupError(Exception):
    """A dependency the worker needs at start failed; the message is one line for the operator."""


def redis_address(url: str) -> str:
    """Where a Redis URL points, without its user info: ``host:port`` (``unix:PATH``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redis_problem(error: BaseException, setting: str, url: str) -> str:
    """One line for a failure to use the Redis at ``url`` (setting ``setting``): what failed, what to check."""
    where = f"Redis at {redis_address(url)} ({setting})"
    tls = urlsplit(url).scheme == "rediss"
    text = str(error).strip().rstrip(".") or type(error).__name__
    if isinstance(error, AuthenticationError) or any(word in text for word in ("NOAUTH", "WRONGPASS", "HELLO must be")):
        if urlsplit(url).password is None and "invalid" not in text:
            return f"{where} requires a password and {setting} has none: write it as redis://:PASSWORD@host:port"
        return f"{where} refused the credentials ({text}): check the user and password in {setting}"
    if (cause := _in_chain(error, ssl.SSLCertVerificationError)) is not None:
        return (f"{where}: the TLS certificate is not trusted ({cause.verify_message}): check the server's "
                "certificate and the CA it is signed by")
    if (cause := _in_chain(error, ssl.SSLError)) is not None:
        return (f"{where}: the TLS handshake failed ({cause.reason or cause}): rediss:// needs a server that "
                "speaks TLS on that port, redis:// one that does not")
    if (cause := _in_chain(error, socket.gaierror)) is not None:
        return f"cannot reach {where}: the host name does not resolve ({cause.strerror}): check the host"
    if _in_chain(error, ConnectionRefusedError) is not None:
        return f"cannot reach {where}: connection refused: check the host and port, and that Redis is running"
    if _in_chain(error, RedisTimeout, TimeoutError) is not None:
        hint = ("; rediss:// expects TLS on that port: a plain Redis port needs redis://" if tls else
                "; check the host, the port and any firewall between")
        return f"cannot reach {where}: no answer in time{hint}"
    if "Connection closed by server" in text and not tls:
        return f"{where} closed the connection: a server that requires TLS needs rediss://"
    if isinstance(error, ResponseError):
        return f"{where} refused a command ({text}): check that {setting} names a Redis server the worker may use"
    if isinstance(error, (RedisError, OSError)):
        return f"cannot use {where}: {text}: check the host, the port and {setting}"
    return f"{where} failed: {text}"


def _in_chain(error: BaseException, *kinds: type[BaseException]) -> BaseException | None:
    """The first of ``error`` and its causes that is one of ``kinds``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
