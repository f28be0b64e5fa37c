"""gRPC transport: PolicyService (Infer, ServerInfo), grpc.health.v1 and server reflection.

Each RPC runs on a grpc worker thread that blocks on the shared batcher. The token is read
from the `authorization` metadata; health and reflection stay open (probes carry no token).
Messages over the limit (`--max-message-bytes`) get RESOURCE_EXHAUSTED naming the limit and
the flag, with trailing metadata saying it is not retryable (errors.GRPC_REASON_KEY); grpc itself
refuses messages over twice the limit before they are buffered ("Received message larger than
max", which clients know as the same reason).
"""
from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from policy_server.service import PolicyService
from vla.wire import protocol
from vla.wire._gen import policy_pb2
from vla.wire.errors import ErrorCode, PolicyError

log = logging.getLogger("policy_server.grpc")


class _Servicer:
    def __init__(self, service: PolicyService):
        self.service = service

    def _abort(self, context: grpc.ServicerContext, err: PolicyError, request_id: str):
        context.set_trailing_metadata(((protocol.REQUEST_ID_HEADER, request_id), *err.grpc_trailers()))
        context.abort(err.grpc_status(), err.message)

    def Infer(self, raw: bytes, context):
        started = time.monotonic()
        svc = self.service
        md = dict(context.invocation_metadata())
        request_id = svc.new_request_id(md.get(protocol.REQUEST_ID_HEADER))
        try:
            svc.check_auth(md.get(protocol.AUTH_HEADER))
            svc.check_size(len(raw))
            try:   # parsed here, not by grpc, so a malformed message is INVALID_ARGUMENT (grpc says INTERNAL)
                request = policy_pb2.InferRequest.FromString(raw)
            except DecodeError:
                raise PolicyError(ErrorCode.INVALID_ARGUMENT, "malformed InferRequest message") from None
            request_id = svc.new_request_id(request.request_id or request_id)
            obs = protocol.request_to_observation(request)
        except PolicyError as err:
            svc.record_error("grpc", err)
            self._abort(context, err, request_id)
        try:
            out = svc.handle(obs, "grpc", request_id, context.time_remaining(), started, context.peer())
        except PolicyError as err:
            self._abort(context, err, request_id)
        return policy_pb2.InferResponse(
            actions=protocol.array_to_tensor(out["actions"], policy_pb2.Tensor),
            server_timing_ms=out["server_timing"]["infer_ms"],
            policy_timing_ms=out["policy_timing"]["infer_ms"],
            model_version=out["model_version"],
            request_id=request_id,
        )

    def ServerInfo(self, raw: bytes, context):   # the request message is empty; its bytes are ignored
        md = dict(context.invocation_metadata())
        try:
            self.service.check_auth(md.get(protocol.AUTH_HEADER))
        except PolicyError as err:
            self._abort(context, err, "")
        return self.service.info().to_proto()


class GrpcTransport:
    def __init__(self, service: PolicyService, host: str = "127.0.0.1", port: int = protocol.GRPC_PORT,
                 max_workers: int = 32):
        self.service = service
        max_bytes = service.config.max_message_bytes
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", 2 * max_bytes),
                     ("grpc.max_send_message_length", max_bytes),
                     ("grpc.so_reuseport", 0)])
        servicer = _Servicer(service)
        # Requests arrive as raw bytes (no request_deserializer) so parse errors map to our taxonomy.
        handlers = {
            "Infer": grpc.unary_unary_rpc_method_handler(
                servicer.Infer, response_serializer=policy_pb2.InferResponse.SerializeToString),
            "ServerInfo": grpc.unary_unary_rpc_method_handler(
                servicer.ServerInfo, response_serializer=policy_pb2.ServerInfoResponse.SerializeToString),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(protocol.GRPC_SERVICE, handlers),))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC on {host}:{port}")
        self.set_serving(False)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", protocol.GRPC_SERVICE):
            self.health.set(name, status)

    def start(self) -> None:
        self.server.start()

    def stop(self, grace_s: float) -> None:
        self.server.stop(grace_s).wait(grace_s + 1.0)
