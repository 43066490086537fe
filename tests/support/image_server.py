"""A hostile-but-local image server (slow, dripping, redirecting, TLS) and image payloads for download tests."""

from __future__ import annotations

import io
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width × height`` pixels: a decompression bomb's shape."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # IHDR data starts after the 8-byte signature, 4-byte length and 4-byte type.
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before the headers (slow server).
    delay_s: float = 0.0
    #: Send the body in chunks this many seconds apart, without a Content-Length.
    drip_s: float | None = None


@dataclass
class ImageServer:
    """A local HTTP server answering each path from ``routes``; records Host headers it saw."""

    base_url: str
    routes: dict[str, Route]
    hosts_seen: list[str]
    servers: list[ThreadingHTTPServer] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def enable_tls(self, cert: Path, key: Path, server_names: list[str | None]) -> int:
        """Serve the same routes over HTTPS with this certificate; returns the port. The SNI name
        of each handshake is appended to ``server_names``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _socket, name, _context: server_names.append(name)
        server = _serve(self.routes, self.hosts_seen)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server.server_address[1]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that give up on purpose (timeouts, size caps) reset connections: not news."""


def _serve(routes: dict[str, Route], hosts_seen: list[str]) -> ThreadingHTTPServer:
    server = _QuietServer(("127.0.0.1", 0), _handler(routes, hosts_seen))
    return server


def _handler(routes: dict[str, Route], hosts_seen: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            """Quiet."""

        def do_GET(self) -> None:
            hosts_seen.append(self.headers.get("host", ""))
            route = routes.get(self.path.split("?")[0], Route(status=404, body=b"not found"))
            time.sleep(route.delay_s)
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.drip_s is None:
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for start in range(0, len(route.body), 1024):
                    chunk = route.body[start : start + 1024]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                    time.sleep(route.drip_s)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    routes: dict[str, Route] = {}
    hosts_seen: list[str] = []
    server = _serve(routes, hosts_seen)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    image_server = ImageServer(f"http://127.0.0.1:{server.server_address[1]}", routes, hosts_seen, [server])
    try:
        yield image_server
    finally:
        for running in image_server.servers:
            running.shutdown()
            running.server_close()
