"""A real `redis-server` on a free loopback port, in a temporary directory.

Tests of the worker run against the real server (Lua scripts, BLMOVE, transactions and
pub/sub behave exactly as in production). The shared server has no persistence: each test starts
from FLUSHALL. `persistent_redis` is a private server with the append-only file, as production
runs it, for tests that kill it (`kill`: SIGKILL, no shutdown) and start it again on the same port.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from local_triton import free_port


class RedisServer:
    """One redis-server process; `stop()`/`start()` simulate an outage on the same port; with a
    ``password``, the default user needs it (`requirepass`) and `url` carries it."""

    def __init__(self, directory: Path, *, append_only: bool = False, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.append_only = append_only
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        # As docker-compose.yml runs it: every write on disk before Redis answers it.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.append_only else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", *persistence, "--protected-mode", "no",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: Redis gets no chance to write anything more."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session; use `redis_url` for a flushed database per test."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before the test."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with the append-only file (fsync on every write) that tests may kill."""
    server = RedisServer(tmp_path / "persistent-redis", append_only=True)
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.kill()
