"""The servers `serve_overhead.py` measures ours against, each in its own process:

    openpi  openpi's own `WebsocketPolicyServer` (PyPI `openpi-server`) at its defaults
    grpc    a bare grpcio server: parse the InferRequest, decode it as ours does, answer
    http    a bare uvicorn ASGI app (same uvicorn settings as ours): read the body, msgpack-decode, answer

Each serves the same policy our server would (the scripted no-op, or a work dir's engine) and
calls it the way our server does (schema check and transforms, then a batch of one), so a
difference in round trip is the servers' machinery and nothing else.

    python benchmarks/_serve_peers.py openpi|grpc|http --port P [--work-dir WD]
prints `READY` on stdout once it listens.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_policy(work_dir: str | None):
    if work_dir:
        from policy_server.engine import load_engine

        return load_engine(work_dir)
    from policy_server.scripted import make_scripted

    return make_scripted("noop", chunk_length=10)


def act(policy: Any, obs: dict[str, Any]) -> np.ndarray:
    """One observation through the policy as our server runs it: prepare on the caller, then a batch of one."""
    out = policy.infer_batch([policy.prepare(obs)])[0]
    if isinstance(out, Exception):
        raise out
    return np.asarray(out, dtype=np.float32)


def serve_openpi(policy: Any, port: int) -> None:
    from openpi_client import base_policy
    from openpi_server import WebsocketPolicyServer

    class Adapter(base_policy.BasePolicy):
        def infer(self, obs: dict) -> dict:
            return {"actions": act(policy, obs)}

    server = WebsocketPolicyServer(Adapter(), host="127.0.0.1", port=port, metadata=policy.info().to_dict())
    print("READY", flush=True)   # websockets binds within serve(); the client retries its connect
    server.serve_forever()


def serve_grpc(policy: Any, port: int) -> None:
    from concurrent import futures

    import grpc

    from vla.wire import protocol
    from vla.wire._gen import policy_pb2

    def infer(raw: bytes, context) -> Any:
        obs = protocol.request_to_observation(policy_pb2.InferRequest.FromString(raw))
        actions = act(policy, obs)
        return policy_pb2.InferResponse(actions=protocol.array_to_tensor(actions, policy_pb2.Tensor))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    handlers = {"Infer": grpc.unary_unary_rpc_method_handler(
        infer, response_serializer=policy_pb2.InferResponse.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(protocol.GRPC_SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


def serve_http(policy: Any, port: int) -> None:
    import uvicorn

    from vla.wire import codec, protocol

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = codec.packb({"actions": act(policy, codec.unpackb(b"".join(chunks)))}, max_bytes=None)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", protocol.MSGPACK_CONTENT_TYPE.encode())]})
        await send({"type": "http.response.body", "body": body})

    print("READY", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                proxy_headers=False, server_header=False, loop="asyncio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["openpi", "grpc", "http"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--work-dir")
    args = ap.parse_args()
    policy = load_policy(args.work_dir)
    act(policy, policy.warmup_observation())
    {"openpi": serve_openpi, "grpc": serve_grpc, "http": serve_http}[args.kind](policy, args.port)


if __name__ == "__main__":
    main()
