"""`PolicyClient`: one small client for the three transports (torch-free).

    client = connect("grpc://127.0.0.1:50051")      # or ws://host:8000, http://host:8000
    client.wait_ready(timeout_s=120)
    info = client.server_info()                     # a ServerInfo: info.chunk_length, ...
    reply = client.infer({"agentview_image": img, ..., "prompt": "put the bowl on the plate"})
    reply["actions"]  # float32 [chunk, action_dim]

Every call has a deadline. Connection failures are retried with exponential backoff (the
server may be restarting) up to `retries` times, then raise PolicyError(UNAVAILABLE).
Errors the server reports carry its code; only retryable ones are retried: the code's default
(errors.RETRYABLE) unless the error says otherwise on the wire. A request over the server's size
limit is RESOURCE_EXHAUSTED (HTTP 413, websocket close 1009 past twice the limit) and never
retried: it raises RequestTooLarge at once.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import time
import urllib.parse
import uuid
from typing import Any, Callable

import numpy as np

from vla.wire import codec, protocol
from vla.wire.errors import HTTP_STATUS, ErrorCode, PolicyError, RequestTooLarge
from vla.wire.server_info import ServerInfo


def _no_delay(sock: Any) -> None:
    """Small replies must not wait for Nagle's algorithm (a delayed-ACK stall costs ~40 ms)."""
    import socket

    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reply(reply: Any) -> Any:
    """`actions` as an array when the reply has them; a reply that breaks the contract is passed
    on as it came, for the caller to judge (sim_client.contract counts it as the policy's failure)."""
    if isinstance(reply, dict) and "actions" in reply:
        try:
            reply["actions"] = np.asarray(reply["actions"])
        except (ValueError, TypeError):
            pass
    return reply


class PolicyClient:
    """Base class: retry loop and readiness wait; transports implement `_infer` and `_info`."""

    scheme = ""

    def __init__(self, host: str, port: int, *, token: str | None = None, timeout_s: float = 30.0,
                 retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
        self.host, self.port = host, port
        self.token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    # -- public API -----------------------------------------------------------------
    def infer(self, obs: dict[str, Any], *, request_id: str | None = None) -> dict[str, Any]:
        rid = request_id or uuid.uuid4().hex[:16]
        return self._with_retries(lambda: self._infer(obs, rid))

    def server_info(self) -> ServerInfo:
        return self._with_retries(self._info)

    def is_ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout_s: float = 120.0, poll_s: float = 0.5) -> None:
        """Block until the server reports ready, or raise UNAVAILABLE with a clear message."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.is_ready():
                    return
            except PolicyError as exc:
                if exc.code is ErrorCode.UNAUTHENTICATED:
                    raise
            if time.monotonic() >= deadline:
                raise PolicyError(ErrorCode.UNAVAILABLE,
                                  f"policy server at {self.url} not ready after {timeout_s:.0f}s; "
                                  f"is it running, and is the address right?")
            time.sleep(poll_s)

    def close(self) -> None:
        pass

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------
    def _with_retries(self, call: Callable[[], Any]) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except PolicyError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                self._reset()
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        """Drop any connection so the next attempt reconnects."""
        self.close()

    def _infer(self, obs: dict[str, Any], request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def _info(self) -> ServerInfo:
        raise NotImplementedError


# gRPC codes outside the taxonomy that still mean "not now" rather than a server bug: a call the
# server cancelled (it was stopping: grpc's stop(grace) cancels the calls it has not answered) or
# aborted. Any other one is INTERNAL.
_GRPC_OUTSIDE_TAXONOMY = {"CANCELLED": ErrorCode.UNAVAILABLE, "ABORTED": ErrorCode.UNAVAILABLE}


class GrpcPolicyClient(PolicyClient):
    scheme = "grpc"

    def __init__(self, host: str, port: int, **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self._channel = None
        self._stub = None

    def _connect(self):
        if self._stub is None:
            import grpc

            from vla.wire._gen import policy_pb2, policy_pb2_grpc

            options = [("grpc.max_send_message_length", protocol.DEFAULT_MAX_MESSAGE_BYTES),
                       ("grpc.max_receive_message_length", protocol.DEFAULT_MAX_MESSAGE_BYTES)]
            self._channel = grpc.insecure_channel(f"{self.host}:{self.port}", options=options)
            self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
            # Infer with the request pre-encoded by protocol.encode_infer_request (same wire bytes).
            self._stub.InferRaw = self._channel.unary_unary(
                f"/{protocol.GRPC_SERVICE}/Infer", request_serializer=bytes,
                response_deserializer=policy_pb2.InferResponse.FromString)
        return self._stub

    def _metadata(self, request_id: str = "") -> list[tuple[str, str]]:
        md = []
        if self.token:
            md.append((protocol.AUTH_HEADER, f"Bearer {self.token}"))
        if request_id:
            md.append((protocol.REQUEST_ID_HEADER, request_id))
        return md

    def _call(self, method: str, request: Any, request_id: str = "") -> Any:
        import grpc

        stub = self._connect()
        try:
            return getattr(stub, method)(request, timeout=self.timeout_s, metadata=self._metadata(request_id))
        except grpc.RpcError as exc:
            code = exc.code()
            name = code.name if code is not None else "UNAVAILABLE"
            details = exc.details() or name
            if name not in ErrorCode.__members__:
                if name in _GRPC_OUTSIDE_TAXONOMY:
                    details = f"gRPC {name} ({details}): the server at {self.url} was probably stopping"
                name = _GRPC_OUTSIDE_TAXONOMY.get(name, ErrorCode.INTERNAL).value
            trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
            raise PolicyError.from_grpc(name, details, trailers, request_id) from None

    def _infer(self, obs: dict[str, Any], request_id: str) -> dict[str, Any]:
        reply = self._call("InferRaw", protocol.encode_infer_request(obs, request_id), request_id)
        return {
            "actions": protocol.tensor_to_array(reply.actions, key="actions"),
            "server_timing": {"infer_ms": reply.server_timing_ms},
            "policy_timing": {"infer_ms": reply.policy_timing_ms},
            "model_version": reply.model_version,
            "request_id": reply.request_id,
        }

    def _info(self) -> ServerInfo:
        from vla.wire._gen import policy_pb2

        return ServerInfo.from_proto(self._call("ServerInfo", policy_pb2.ServerInfoRequest()))

    def is_ready(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        import grpc

        self._connect()
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=protocol.GRPC_SERVICE),
                               timeout=min(self.timeout_s, 5.0), metadata=self._metadata())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise PolicyError(ErrorCode.UNAUTHENTICATED, exc.details() or "unauthenticated") from None
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None


@functools.cache
def _ws_legacy_kwargs() -> dict[str, Any]:
    # websockets >= 17.1 warns unless a directly-held connection opts in with legacy=True;
    # older releases have no such flag.
    import inspect

    from websockets.sync.client import connect as ws_connect

    return {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}


WS_CLOSE_TOO_BIG = 1009   # websocket close code "message too big"


class WebsocketPolicyClient(PolicyClient):
    """openpi's websocket protocol; also talks to an openpi policy server."""

    scheme = "ws"

    def __init__(self, host: str, port: int, *, path: str = "/", **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.path = path
        self._ws = None
        self._metadata: dict[str, Any] | None = None

    def _connect(self):
        if self._ws is None:
            from websockets.exceptions import InvalidStatus
            from websockets.sync.client import connect as ws_connect

            headers = {"Authorization": f"Api-Key {self.token}"} if self.token else None
            try:
                self._ws = ws_connect(f"ws://{self.host}:{self.port}{self.path}", additional_headers=headers,
                                      max_size=protocol.DEFAULT_MAX_MESSAGE_BYTES, compression=None,
                                      open_timeout=self.timeout_s, close_timeout=1.0, **_ws_legacy_kwargs())
            except InvalidStatus as exc:
                status = exc.response.status_code
                code = ErrorCode.UNAUTHENTICATED if status in (401, 403) else ErrorCode.UNAVAILABLE
                raise PolicyError(code, f"websocket handshake refused with HTTP {status}") from None
            except (OSError, TimeoutError) as exc:
                raise PolicyError(ErrorCode.UNAVAILABLE, f"cannot connect to {self.url}: {exc}") from None
            _no_delay(getattr(self._ws, "socket", None))
            self._metadata = codec.unpackb(self._recv())
        return self._ws

    def _recv(self) -> Any:
        from websockets.exceptions import ConnectionClosed

        try:
            return self._ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            self._reset()
            raise PolicyError(ErrorCode.DEADLINE_EXCEEDED, f"no reply from {self.url} in {self.timeout_s}s") from None
        except ConnectionClosed as exc:
            self._reset()
            raise self._closed(exc) from None

    def _closed(self, exc: Any) -> PolicyError:
        """A closed connection is UNAVAILABLE (retry), unless the server closed it for a frame
        too big (1009): the same frame can never be taken."""
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is not None and rcvd.code == WS_CLOSE_TOO_BIG:
            return RequestTooLarge(f"the server at {self.url} closed the connection: the request frame is "
                                   f"too big ({exc})")
        return PolicyError(ErrorCode.UNAVAILABLE, f"connection to {self.url} closed: {exc}")

    def _infer(self, obs: dict[str, Any], request_id: str) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        ws = self._connect()
        try:
            ws.send(codec.packb(obs))
        except ConnectionClosed as exc:
            self._reset()
            raise self._closed(exc) from None
        frame = self._recv()
        if isinstance(frame, str):
            try:
                raise PolicyError.from_dict(json.loads(frame))
            except json.JSONDecodeError:
                raise PolicyError(ErrorCode.INTERNAL, frame) from None
        return _reply(codec.unpackb(frame))

    def _info(self) -> ServerInfo:
        self._connect()
        return ServerInfo.from_dict(self._metadata or {})

    def is_ready(self) -> bool:
        """Ready when the handshake succeeds and the metadata frame arrives: what openpi's own
        client waits for, and all an openpi `WebsocketPolicyServer` offers (it has no /readyz).
        A server whose metadata names a readiness path (`ready_path`, as this project's server
        does) is asked there too: it accepts websockets while it is still warming up."""
        try:
            self._connect()
        except PolicyError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                raise
            self._reset()
            return False
        ready_path = ServerInfo.from_dict(self._metadata).ready_path if isinstance(self._metadata, dict) else None
        if not ready_path:
            return True
        with HttpPolicyClient(self.host, self.port, token=self.token, timeout_s=min(self.timeout_s, 5.0)) as probe:
            return probe.is_ready(str(ready_path))

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # closing a broken socket must not mask the real error
                pass
        self._ws = None


class HttpPolicyClient(PolicyClient):
    """HTTP/1.1 with one kept-alive connection (not thread-safe: one client per thread)."""

    scheme = "http"

    def __init__(self, host: str, port: int, **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self._conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 request_id: str = "") -> tuple[int, str, bytes]:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
            headers["Accept"] = content_type
        if request_id:
            headers[protocol.REQUEST_ID_HEADER] = request_id
        for attempt in range(2):   # a kept-alive connection the server closed is retried once, fresh
            fresh = self._conn is None
            try:
                if fresh:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                    self._conn.connect()
                    _no_delay(self._conn.sock)
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    self._reset()
                return resp.status, resp.headers.get("Content-Type", ""), payload
            except TimeoutError:
                self._reset()
                raise PolicyError(ErrorCode.DEADLINE_EXCEEDED, f"no reply from {self.url} in {self.timeout_s}s",
                                  request_id) from None
            except (http.client.HTTPException, OSError) as exc:
                self._reset()
                if fresh or attempt == 1:
                    raise PolicyError(ErrorCode.UNAVAILABLE, f"cannot reach {self.url}: {exc}", request_id) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    @staticmethod
    def _error(status: int, ctype: str, payload: bytes, request_id: str = "") -> PolicyError:
        try:
            body = codec.unpackb(payload) if ctype.startswith(protocol.MSGPACK_CONTENT_TYPE) else json.loads(payload)
            return PolicyError.from_dict(body["error"])
        except Exception:
            if status == 413:
                return RequestTooLarge(f"HTTP 413: {payload[:200]!r}", request_id)
            code = next((c for c, s in HTTP_STATUS.items() if s == status), ErrorCode.INTERNAL)
            return PolicyError(code, f"HTTP {status}: {payload[:200]!r}", request_id)

    def _infer(self, obs: dict[str, Any], request_id: str) -> dict[str, Any]:
        status, ctype, payload = self._request("POST", protocol.INFER_PATH, codec.packb(obs),
                                               protocol.MSGPACK_CONTENT_TYPE, request_id)
        if status != 200:
            raise self._error(status, ctype, payload, request_id)
        return _reply(codec.unpackb(payload))

    def _info(self) -> ServerInfo:
        status, ctype, payload = self._request("GET", protocol.INFO_PATH)
        if status != 200:
            raise self._error(status, ctype, payload)
        return ServerInfo.from_dict(json.loads(payload))

    def is_ready(self, path: str = protocol.READY_PATH) -> bool:
        try:
            status, ctype, payload = self._request("GET", path)
        except PolicyError:
            return False
        if status == 401:
            raise self._error(status, ctype, payload)
        return status == 200


_CLIENTS = {"grpc": GrpcPolicyClient, "ws": WebsocketPolicyClient, "http": HttpPolicyClient}


def connect(url: str, **kwargs: Any) -> PolicyClient:
    """A client for `grpc://host:port`, `ws://host:port[/path]` or `http://host:port`."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in _CLIENTS:
        raise ValueError(f"unsupported server URL {url!r}: use grpc://, ws:// or http://")
    if not parsed.hostname:
        raise ValueError(f"server URL {url!r} has no host")
    default_port = protocol.GRPC_PORT if parsed.scheme == "grpc" else protocol.HTTP_PORT
    port = parsed.port or default_port
    if parsed.scheme == "ws" and parsed.path not in ("", "/"):
        kwargs.setdefault("path", parsed.path)
    return _CLIENTS[parsed.scheme](parsed.hostname, port, **kwargs)
