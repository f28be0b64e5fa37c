"""`PolicyServer`: one PolicyService (one batcher) behind gRPC and HTTP/websocket.

Lifecycle: start() binds both ports and starts warm-up; readiness (/readyz, gRPC health)
turns on when warm-up ends. drain() is the SIGTERM path: readiness off, new requests get
UNAVAILABLE, every accepted request is answered, then the transports close.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import uvicorn

from policy_server.batcher import BatcherConfig
from policy_server.grpc_transport import GrpcTransport
from policy_server.http_transport import WebSocketProtocol, build_app
from policy_server.policy import Policy
from policy_server.service import PolicyService, ServiceConfig

log = logging.getLogger("policy_server")


class _HttpServer(uvicorn.Server):
    """uvicorn's server, ticking once a second instead of ten times. Its tick refreshes the Date
    header (each second) and checks `should_exit`; ten a second woke the event loop ten times a
    second even when idle, and a wake-up that met a request delayed it (openpi's server never
    ticks). `exit()` ends it at once from any thread."""

    _exit: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._exit = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter += 10   # on_tick refreshes the Date header when counter % 10 == 0
            try:
                await asyncio.wait_for(self._exit.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def exit(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._exit is not None:
            try:
                self._loop.call_soon_threadsafe(self._exit.set)
            except RuntimeError:   # the loop has already closed
                pass


class PolicyServer:
    def __init__(self, policy: Policy, *, host: str = "127.0.0.1", grpc_port: int | None = None,
                 http_port: int | None = None, batcher: BatcherConfig | None = None,
                 service: ServiceConfig | None = None, grpc_workers: int = 32):
        self.service = PolicyService(policy, batcher, service)
        self.host = host
        self.grpc = GrpcTransport(self.service, host, grpc_port, grpc_workers) if grpc_port is not None else None
        self.http_port = http_port
        self._uvicorn: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def grpc_port(self) -> int | None:
        return self.grpc.port if self.grpc else None

    def start(self, timeout_s: float = 30.0) -> "PolicyServer":
        self.service.start()
        if self.grpc:
            self.grpc.start()
        if self.http_port is not None:
            limit = self.service.config.max_message_bytes
            config = uvicorn.Config(build_app(self.service), host=self.host, port=self.http_port,
                                    log_level="warning", access_log=False, lifespan="off",
                                    ws=WebSocketProtocol, ws_max_size=2 * limit, ws_per_message_deflate=False,
                                    ws_ping_interval=None, timeout_graceful_shutdown=5,
                                    proxy_headers=False, server_header=False, loop="asyncio")
            self._uvicorn = _HttpServer(config)
            self._http_thread = threading.Thread(target=self._uvicorn.run, name="http", daemon=True)
            self._http_thread.start()
            deadline = time.monotonic() + timeout_s
            while not self._uvicorn.started:
                if not self._http_thread.is_alive():
                    raise OSError(f"HTTP server failed to start on {self.host}:{self.http_port} (port in use?)")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"HTTP server did not start within {timeout_s}s")
                time.sleep(0.01)
        threading.Thread(target=self._mark_ready, name="ready-watch", daemon=True).start()
        return self

    def _mark_ready(self) -> None:
        self.service.batcher.wait_ready()
        if self.grpc and not self.service.draining:
            self.grpc.set_serving(True)
        log.info("policy_server ready: model=%s grpc=%s http=%s warm-up %.2fs", self.service.info().model,
                 self.grpc_port, self.http_port, self.service.batcher.warmup_s)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        return self.service.batcher.wait_ready(timeout_s)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Stop taking requests, answer every accepted one, then shut the transports down."""
        if self._stopped:
            return True
        log.info("draining: readiness off, waiting for %d accepted requests", self.service.batcher.pending())
        self.service.begin_drain()
        if self.grpc:
            self.grpc.set_serving(False)
        deadline = time.monotonic() + timeout_s
        clean = self.service.batcher.drain(timeout_s)
        clean = self.service.wait_idle(max(deadline - time.monotonic(), 0.0)) and clean
        time.sleep(0.1)   # replies are built; let the transports' threads and loop write them out
        if not clean:
            log.warning("drain deadline of %.1fs passed with %d requests unanswered",
                        timeout_s, self.service.batcher.pending())
        self.stop(grace_s=2.0)
        return clean

    def stop(self, grace_s: float = 0.5) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.service.begin_drain()
        if self.grpc:
            # grace lets the threads that already hold a result write their replies.
            self.grpc.stop(grace_s)
        if self._uvicorn is not None:
            self._uvicorn.exit()
            self._http_thread.join(grace_s + 6.0)
        self.service.batcher.stop()
        self.service.close()

    def __enter__(self) -> "PolicyServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
