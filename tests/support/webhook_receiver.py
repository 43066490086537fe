"""A real local HTTP server standing in for the backend's webhook endpoint.

It records every POST (path, headers, raw body, when it arrived), can answer with failures on
demand (`fail_next`, or `answer_all` for a backend that answers every request with an error), can
take a while to answer (`delay_s`, counting the requests it holds at once), and can be taken down
and brought back on the same port (`stop`/`start`) to simulate a backend outage: while it is down,
connections are refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from local_triton import free_port


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float = 0.0
    """When it arrived (`time.monotonic`)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records POSTs; `fail_next(n, status)` makes the next n answer `status`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._failures: list[int] = []
        self._answer_all: int | None = None
        self.delay_s = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.monotonic()
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    receiver.in_flight -= 1
                    status = receiver._failures.pop(0) if receiver._failures else receiver._answer_all or 200
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers.items()), body, status, arrived))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": %s}' % (b"true" if status < 300 else b"false"))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def answer_all(self, status: int | None) -> None:
        """Answer every request with ``status`` from now on (None: answer normally again)."""
        with self._lock:
            self._answer_all = status

    def accepted(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Bodies answered 2xx, optionally for one job, in arrival order."""
        with self._lock:
            bodies = [d.json for d in self.deliveries if d.answered < 300]
        return [body for body in bodies if job_id is None or body.get("jobId") == job_id]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll until `predicate(accepted bodies)` holds; raises TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            bodies = self.accepted()
            if predicate(bodies):
                return bodies
            time.sleep(0.05)
        raise TimeoutError(f"webhooks received so far: {self.accepted()}")


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
