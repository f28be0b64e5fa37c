"""HTTP + websocket transport (FastAPI on uvicorn): /v1/infer, /v1/info, probes, /metrics,
and openpi's websocket protocol at `/`.

Websocket (openpi-compatible): the first frame is the ServerInfo (msgpack-numpy); then each
binary request frame gets a binary reply frame. An error is a text frame holding
`{"code", "message", "retryable", "request_id"}` as JSON and the connection stays open. Frames over the
limit (`--max-message-bytes`, 8 MiB by default) get RESOURCE_EXHAUSTED (not retryable) naming the limit and the
flag; frames over twice the limit are cut off by the protocol layer (close code 1009), so a
hostile peer cannot make the server buffer unbounded data.

Bodies and frames over `service.OFFLOAD_BYTES` are decoded, validated and prepared off the loop
(msgpack on the service's prep threads, JSON in its worker process), so one large request never holds the event loop that answers the
others (and /healthz).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from policy_server import metrics as metrics_mod
from policy_server import schema
from policy_server.bodies import BodyTooLong, RequestBody
from policy_server.service import OFFLOAD_BYTES, PolicyService
from vla.wire import codec, protocol
from vla.wire.errors import ErrorCode, PolicyError

log = logging.getLogger("policy_server.http")


def _json_ready(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in reply.items()}


def _error_response(err: PolicyError, msgpack_reply: bool) -> Response:
    body = {"error": err.to_dict()}
    if msgpack_reply:
        return Response(codec.packb(body), status_code=err.http_status, media_type=protocol.MSGPACK_CONTENT_TYPE)
    return JSONResponse(body, status_code=err.http_status)


async def _read_body(request: Request, service: PolicyService, use_json: bool) -> RequestBody:
    """The body, refused by its Content-Length before any of it is read when that is over the cap,
    read into one buffer (a large JSON one in shared memory for the parse process). Close it."""
    header = request.headers.get("content-length")
    length = int(header) if header is not None and header.isdigit() else None
    if length is not None:
        service.check_size(length)
    body = RequestBody.open(length, service.config.max_message_bytes,
                            shared=use_json and length is not None and length > OFFLOAD_BYTES)
    try:
        async for chunk in request.stream():
            body.add(chunk)
    except BodyTooLong as exc:
        body.close()
        if exc.args[0] > service.config.max_message_bytes:
            raise service.too_big() from None
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"body is longer than its Content-Length {length}") from None
    except BaseException:
        body.close()
        raise
    return body


class _InferFastPath:
    """ASGI front: `POST /v1/infer` and the websocket at `/` go straight to their handlers;
    everything else to FastAPI.

    These are the hot paths; FastAPI's middleware and routing layers cost about 0.1 ms of
    event-loop time per request (and, on the websocket, per message in each direction) and add
    nothing to routes that read raw bytes. Other methods on the path still reach FastAPI (and get
    its 405)."""

    def __init__(self, app: FastAPI, handler: Any, websocket: Any):
        self.app = app
        self.handler = handler
        self.websocket = websocket

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == protocol.INFER_PATH and scope["method"] == "POST":
            response = await self.handler(Request(scope, receive))
            await response(scope, receive, send)
            return
        if scope["type"] == "websocket" and scope["path"] == "/":
            await self.websocket(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Reading a websocket pauses only when this many messages wait unread (a client pipelining requests
# without reading replies); openpi's client sends one and waits, so its socket is never paused.
WS_QUEUE_HIGH = 2


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol (websockets-sansio), minus its pause of the socket after every
    message until the app takes it: that pause and its resume were two epoll_ctl calls and a
    reader re-registration on the event loop per request, which openpi's server (websockets' own
    asyncio server, which pauses at a queue limit) does not pay. Reading pauses when
    `WS_QUEUE_HIGH` messages are queued, so memory stays bounded by that many frames of at most
    twice `--max-message-bytes` each."""

    def send_receive_event_to_app(self) -> None:
        paused, self.read_paused = self.read_paused, True   # the parent pauses unless already paused
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not self.read_paused and self.queue.qsize() >= WS_QUEUE_HIGH:
            self.read_paused = True
            self.transport.pause_reading()   # the parent's receive() resumes it once the queue is empty


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _websocket_handler(service: PolicyService) -> Any:
    """openpi's websocket protocol as a bare ASGI app (see the module docstring)."""
    auth_header = protocol.AUTH_HEADER.encode()

    async def websocket(scope: dict, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            service.check_auth(_header(scope, auth_header))
        except PolicyError as err:
            service.record_error("ws", err)
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthenticated"})  # HTTP 403
            return
        await send({"type": "websocket.accept"})
        connection = ("ws", scope.get("client"))   # the batcher tells clients apart by connection
        await send({"type": "websocket.send", "bytes": codec.packb(service.info().to_dict())})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            started = time.monotonic()
            request_id = service.new_request_id()
            try:
                frame = message.get("bytes")
                if frame is None:
                    raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                                      "send observations as binary msgpack-numpy frames, not text")
                obs = await service.adecode(frame, service.decode)
            except PolicyError as err:
                err.request_id = request_id
                service.record_error("ws", err)
                await send({"type": "websocket.send", "text": json.dumps(err.to_dict())})
                continue
            try:
                reply = await service.ahandle(obs, "ws", request_id, None, started, connection,
                                              offload=service.offloaded(frame))
            except PolicyError as err:
                await send({"type": "websocket.send", "text": json.dumps(err.to_dict())})
                continue
            try:
                await send({"type": "websocket.send", "bytes": codec.packb(reply, max_bytes=None)})
            except OSError:   # the client went away before its reply (uvicorn's ClientDisconnected)
                return

    return websocket


def build_app(service: PolicyService) -> _InferFastPath:
    app = FastAPI(title="policy_server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(protocol.INFER_PATH)
    async def infer(request: Request) -> Response:
        started = time.monotonic()
        ctype = request.headers.get("content-type", protocol.MSGPACK_CONTENT_TYPE).split(";")[0].strip().lower()
        use_json = ctype == protocol.JSON_CONTENT_TYPE
        request_id = service.new_request_id(request.headers.get(protocol.REQUEST_ID_HEADER))
        try:
            service.check_auth(request.headers.get(protocol.AUTH_HEADER))
            if ctype not in (protocol.JSON_CONTENT_TYPE, protocol.MSGPACK_CONTENT_TYPE):
                raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                                  f"unsupported Content-Type {ctype!r}: use {protocol.MSGPACK_CONTENT_TYPE} "
                                  f"or {protocol.JSON_CONTENT_TYPE}")
            body = await _read_body(request, service, use_json)
            try:
                obs = await (service.adecode_json(body) if use_json else service.adecode(body.data(), service.decode))
            finally:
                body.close()
        except PolicyError as err:
            err.request_id = request_id
            service.record_error("http", err)
            return _error_response(err, not use_json)
        try:
            reply = await service.ahandle(obs, "http", request_id, None, started,
                                         ("http", request.scope.get("client")), offload=service.offloaded(body))
        except PolicyError as err:
            return _error_response(err, not use_json)
        if use_json:
            return JSONResponse(_json_ready(reply))
        return Response(codec.packb(reply, max_bytes=None), media_type=protocol.MSGPACK_CONTENT_TYPE)

    @app.get(protocol.INFO_PATH)
    async def info(request: Request) -> Response:
        try:
            service.check_auth(request.headers.get(protocol.AUTH_HEADER))
        except PolicyError as err:
            return _error_response(err, False)
        return JSONResponse(service.info().to_dict())

    @app.get(protocol.HEALTH_PATH)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "draining": service.draining})

    @app.get(protocol.READY_PATH)
    async def readyz() -> Response:
        if service.ready:
            return JSONResponse({"ready": True})
        why = "draining" if service.draining else "warming up"
        return JSONResponse({"ready": False, "reason": why}, status_code=503)

    @app.get(protocol.METRICS_PATH)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=metrics_mod.CONTENT_TYPE_LATEST)

    return _InferFastPath(app, infer, _websocket_handler(service))
