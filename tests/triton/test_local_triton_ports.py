"""Port picking for the local tritonserver: three distinct ports per server, none handed out twice.

A CI run once failed at start with "The server cannot listen to HTTP requests and GRPC requests at
the same address and port": two bind(0) calls in a row had returned the same port.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from local_triton import LocalTriton, free_port, server


class _ScriptedSocket:
    """Stands in for a kernel that hands the same ephemeral port out again."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._port = 0

    def bind(self, _address: tuple[str, int]) -> None:
        self._port = self._ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self._port)

    def close(self) -> None:
        pass


def test_a_server_gets_three_distinct_ports_even_when_the_kernel_repeats_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = [61001, 61001, 61002, 61001, 61003]
    monkeypatch.setattr(server, "_handed_out", set())
    monkeypatch.setattr(server.socket, "socket", lambda *_args: _ScriptedSocket(script))
    triton = LocalTriton(repository=Path("."))
    assert [triton.grpc_port, triton.http_port, triton.metrics_port] == [61001, 61002, 61003]


def test_ports_given_by_the_caller_are_kept_and_only_the_missing_one_is_picked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = [61004]
    monkeypatch.setattr(server, "_handed_out", set())
    monkeypatch.setattr(server.socket, "socket", lambda *_args: _ScriptedSocket(script))
    triton = LocalTriton(repository=Path("."), grpc_port=8001, http_port=8000)
    assert (triton.grpc_port, triton.http_port, triton.metrics_port) == (8001, 8000, 61004)
    assert script == []
    assert server._handed_out == {61004}


def test_no_port_is_handed_out_twice_and_each_is_free() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", ports[-1]))
