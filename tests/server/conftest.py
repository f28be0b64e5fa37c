"""Fixtures: in-process policy servers on free 127.0.0.1 ports, and clients for each transport."""
from __future__ import annotations

import pytest

from policy_server.batcher import BatcherConfig
from policy_server.schema import example_observation
from policy_server.scripted import make_scripted
from policy_server.server import PolicyServer
from policy_server.service import ServiceConfig
from tests.conftest import free_port
from vla.wire import connect

TRANSPORTS = ("grpc", "ws", "http")


def start_server(policy, *, batcher: BatcherConfig | None = None, service: ServiceConfig | None = None,
                 **kwargs) -> PolicyServer:
    server = PolicyServer(policy, grpc_port=free_port(), http_port=free_port(), batcher=batcher,
                          service=service or ServiceConfig(token=""), **kwargs).start()
    assert server.wait_ready(30), "server did not become ready"
    return server


def url(server: PolicyServer, transport: str) -> str:
    port = server.grpc_port if transport == "grpc" else server.http_port
    return f"{transport}://127.0.0.1:{port}"


def client(server: PolicyServer, transport: str, **kwargs):
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("timeout_s", 10.0)
    kwargs.setdefault("token", "")
    return connect(url(server, transport), **kwargs)


@pytest.fixture(scope="module")
def noop_server():
    server = start_server(make_scripted("noop", chunk_length=5),
                          batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=1.0))
    yield server
    server.stop()


@pytest.fixture
def obs():
    return example_observation(64, 64)
