"""The telemetry switches reach every process before an engine can start (img2mesh/telemetry.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from img2mesh.telemetry import TELEMETRY_OFF
from local_triton import LocalTriton
from tests.support.egress import outside_attempts

ROOT = Path(__file__).resolve().parents[2]


def test_importing_img2mesh_switches_telemetry_off_even_against_the_inherited_environment() -> None:
    environment = {**os.environ, **{name: "0" for name in TELEMETRY_OFF}}
    shown = subprocess.run(
        [sys.executable, "-c", "import json, os, img2mesh; print(json.dumps(dict(os.environ)))"],
        env=environment, cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    assert TELEMETRY_OFF.items() <= json.loads(shown).items()


def test_the_local_tritonserver_and_its_stubs_get_the_switches(tmp_path: Path) -> None:
    assert TELEMETRY_OFF.items() <= LocalTriton(tmp_path).environment().items()


def test_the_egress_trace_reader_keeps_only_outside_peers_and_lookups() -> None:
    trace = "\n".join([
        '7<python> connect(3, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
        '7<python> connect(4, {sa_family=AF_INET, sin_port=htons(6379), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '7<python> connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
        '8<tritonserver> connect(6, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("10.1.2.3")}, 16)'
        ' = -1 ENETUNREACH',
        '9<stub> connect(7, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        r'9<stub> sendto(7, "\1\2\1\0\0\1\0\0\0\0\0\0\6events\4data\3com\0\0\1\0\1", 33, MSG_NOSIGNAL, NULL, 0) = 33',
        '10<python> sendto(8, "GET", 3, 0, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH',
    ])
    assert [str(attempt) for attempt in outside_attempts(trace)] == [
        "tritonserver [pid 8] connect 10.1.2.3:443",
        "stub [pid 9] connect 127.0.0.1:53 (DNS lookup of events.data.com)",
        "python [pid 10] sendto 2001:db8::1:80",
    ]
