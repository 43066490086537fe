"""Run a command where only loopback exists, and record every attempt to reach anything else.

The command runs in a new network namespace whose one interface is `lo` (`unshare --net`), so no
packet can leave the machine whatever the code does, under `strace -f` on the calls that address a
peer (`connect`, `sendto`, `sendmsg`), so each attempt is seen with the process that made it.
Inside, the resolver is 127.0.0.1 (a private mount namespace binds a `resolv.conf` over the
host's), where nothing answers: a name lookup that /etc/hosts cannot answer becomes a datagram to
loopback port 53 whose question is in the trace, so the failure names the host looked up.
"""

from __future__ import annotations

import codecs
import ipaddress
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

# `1234<python3> connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.0.0.2")}, 16) = ...`
_CALL = re.compile(r"^(?P<pid>\d+)<(?P<process>[^>]*)>\s+(?P<call>connect|sendto|sendmsg)\((?P<args>.*)$")
_IPV4 = re.compile(r'sa_family=AF_INET, sin_port=htons\((?P<port>\d+)\), sin_addr=inet_addr\("(?P<address>[^"]+)"\)')
_IPV6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((?P<port>\d+)\).*?inet_pton\(AF_INET6, "(?P<address>[^"]+)"')
_PAYLOAD = re.compile(r'^\d+, "(?P<bytes>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class OutsideAttempt:
    """One call that addressed a peer outside loopback."""

    pid: int
    process: str
    call: str
    address: str
    port: int
    looked_up: str | None

    def __str__(self) -> str:
        lookup = f" (DNS lookup of {self.looked_up})" if self.looked_up else ""
        return f"{self.process} [pid {self.pid}] {self.call} {self.address}:{self.port}{lookup}"


def run_offline(argv: Sequence[str], *, trace: Path, cwd: Path, env: dict[str, str],
                timeout_s: float) -> tuple[subprocess.CompletedProcess[str], list[OutsideAttempt]]:
    """Run ``argv`` in a loopback-only namespace under strace; its result and every outside attempt."""
    traced = ["strace", "-f", "--seccomp-bpf", "-qq", "-Y", "-s", "300", "-e", "trace=connect,sendto,sendmsg",
              "-e", "signal=none", "-o", str(trace), "--", *argv]
    resolv_conf = trace.with_name("resolv.conf")
    resolv_conf.write_text("nameserver 127.0.0.1\n")
    isolate = 'ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$@"'
    command = ["unshare", "--net", "--mount", "--", "sh", "-c", isolate, str(resolv_conf), *traced]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,  # noqa: S603
                            timeout=timeout_s, check=False)
    return result, outside_attempts(trace.read_text(errors="replace"))


def outside_attempts(trace: str) -> list[OutsideAttempt]:
    """Every connect/sendto/sendmsg of ``trace`` (strace -f -Y output) to a non-loopback address,
    and every DNS query (port 53: no test runs a name server, so each is a lookup of an outside name).

    The resolver connects a UDP socket to port 53 and then sends its question without an address,
    so a process's next datagram after such a connect names the host it looked up.
    """
    found: list[OutsideAttempt] = []
    unnamed_lookup: dict[int, int] = {}  # pid -> index in `found` of its lookup still without a name
    for line in trace.splitlines():
        call = _CALL.match(line)
        if call is None:
            continue
        pid, peer = int(call["pid"]), _IPV4.search(call["args"]) or _IPV6.search(call["args"])
        if peer is None:
            if pid in unnamed_lookup and call["call"] != "connect" and (question := _question(call["args"])):
                index = unnamed_lookup.pop(pid)
                found[index] = replace(found[index], looked_up=question)
            continue
        port = int(peer["port"])
        if _is_local(peer["address"]) and port != 53:
            continue
        question = _question(call["args"]) if port == 53 and call["call"] != "connect" else None
        found.append(OutsideAttempt(pid, call["process"], call["call"], peer["address"], port, question))
        if port == 53 and question is None:
            unnamed_lookup[pid] = len(found) - 1
    return found


def _is_local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback or (mapped or ip).is_unspecified


def _question(args: str) -> str | None:
    """The name a DNS query datagram asks for, from strace's escaped payload; None if it is none."""
    payload = _PAYLOAD.match(args)
    if payload is None:
        return None
    data: bytes = codecs.escape_decode(payload["bytes"].encode("latin-1"))[0]  # type: ignore[attr-defined]
    labels, position = [], 12  # after the DNS header
    while position < len(data) and data[position]:
        length = data[position]
        labels.append(data[position + 1: position + 1 + length].decode("ascii", "replace"))
        position += 1 + length
    return ".".join(labels) or None
