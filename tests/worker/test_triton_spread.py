"""The worker's Triton channel spreads its calls over every address of TRITON_URL.

On Kubernetes TRITON_URL names a headless Service whose DNS answer holds one address per ready
Triton pod (docs/runbook.md, "Kubernetes"). gRPC's default policy would send every call over the
one connection it opened first; the worker's channel balances round robin. Three stand-in Triton
servers on loopback, one target listing all three, as the DNS resolver hands it to the channel.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from client_worker.pipeline.inference import TritonMeshClient

SERVERS = 3
CALLS = 30


class ReadyTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers the readiness calls the worker makes, counting them."""

    def __init__(self, name: str, calls: Counter[str]) -> None:
        self.name = name
        self.calls = calls

    async def ServerLive(self, request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext) -> service_pb2.ServerLiveResponse:  # noqa: N802 - gRPC's name
        self.calls[self.name] += 1
        return service_pb2.ServerLiveResponse(live=True)

    async def ModelReady(self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext) -> service_pb2.ModelReadyResponse:  # noqa: N802 - gRPC's name
        self.calls[self.name] += 1
        return service_pb2.ModelReadyResponse(ready=True)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[str, Counter[str]]]:
    """(a target with every replica's address, calls per replica)."""
    calls: Counter[str] = Counter()
    servers, addresses = [], []
    for index in range(SERVERS):
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(ReadyTriton(f"replica-{index}", calls), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    yield "ipv4:" + ",".join(addresses), calls
    for server in servers:
        await server.stop(None)


async def test_the_worker_spreads_its_calls_over_every_replica(replicas: tuple[str, Counter[str]]) -> None:
    target, calls = replicas
    client = TritonMeshClient(target)
    try:
        deadline = time.monotonic() + 10
        while len(calls) < SERVERS and time.monotonic() < deadline:  # until every connection is up
            await client.wait_ready(10)
        calls.clear()
        for _ in range(CALLS):
            assert await client.readiness() is None
    finally:
        await client.close()
    # Each readiness check is two calls; round robin gives every replica its equal share.
    assert sorted(calls.values()) == [2 * CALLS // SERVERS] * SERVERS, calls


async def test_a_default_channel_would_pin_every_call_to_one_replica(replicas: tuple[str, Counter[str]]) -> None:
    """What the channel arguments change: without them one replica gets everything."""
    target, calls = replicas
    client = grpcclient.InferenceServerClient(target)
    try:
        for _ in range(CALLS):
            assert await client.is_server_live()
    finally:
        await client.close()
    assert list(calls.values()) == [CALLS], calls
