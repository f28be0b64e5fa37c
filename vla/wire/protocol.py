"""The wire contract shared by the policy server and every client (torch-free).

Transports
----------
gRPC (default port 50051)
    `vla.policy.v1.PolicyService/Infer` and `/ServerInfo` (proto/vla/policy/v1/policy.proto),
    `grpc.health.v1.Health`, server reflection. Token in metadata `authorization`.
HTTP (default port 8000)
    `POST /v1/infer`  body: msgpack-numpy (`application/msgpack`) or JSON (`application/json`);
                      the reply uses the request's content type.
    `GET /v1/info`    the ServerInfo as JSON.
    `GET /healthz`    200 while the process is up; `GET /readyz` 200 once warmed up and not draining.
    `GET /metrics`    Prometheus text format.
    Errors: the HTTP status of the code (errors.HTTP_STATUS; 413 for a request over the size
    limit) and a body `{"error": {"code", "message", "retryable", "request_id", "reason"?}}`.
Websocket (same port, path `/`), openpi's protocol
    The server's first frame is the ServerInfo (binary, msgpack-numpy); a client is ready to
    send once it has arrived, and asks `ready_path` too when the ServerInfo names one. Each request is a
    binary frame holding the observation; each reply a binary frame holding the action dict.
    An error is a *text* frame holding `{"code", "message", "retryable", "request_id"}` as JSON
    (openpi's client raises on any text frame); the connection stays open.

Authentication: `Authorization: Bearer <token>` or openpi's `Authorization: Api-Key <token>`.

Observation: the simulator's own keys or openpi's LIBERO keys (OBSERVATION_KEYS below) plus
`prompt`, and optionally `seed` (an int in [0, 2**63)): the seed of the flow-matching noise for this
request, so a rerun is identical (gRPC: InferRequest.seed; absent, the server draws fresh noise). Reply: `actions` float32 [chunk, action_dim] in the robot's units,
`server_timing` and `policy_timing` as `{"infer_ms": float}` (openpi's layout) and
`model_version`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from vla.wire.errors import ErrorCode, PolicyError

GRPC_PORT = 50051
HTTP_PORT = 8000
INFER_PATH = "/v1/infer"
INFO_PATH = "/v1/info"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
MSGPACK_CONTENT_TYPE = "application/msgpack"
JSON_CONTENT_TYPE = "application/json"
TOKEN_ENV = "POLICY_SERVER_TOKEN"
AUTH_HEADER = "authorization"
REQUEST_ID_HEADER = "x-request-id"
GRPC_SERVICE = "vla.policy.v1.PolicyService"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024   # what clients accept (replies, ServerInfo)
# What a server accepts in one request by default (policy_server --max-message-bytes): a LIBERO
# request (two 256x256 uint8 images + state) is ~0.4 MB as msgpack and ~1.5 MB as JSON.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024

# Image orientation a server declares in ServerInfo. LIBERO renders upside down;
# "as_rendered" servers flip the frames themselves, "rotated_180" servers expect clients to.
ORIENTATION_AS_RENDERED = "as_rendered"
ORIENTATION_ROTATED_180 = "rotated_180"
ORIENTATIONS = (ORIENTATION_AS_RENDERED, ORIENTATION_ROTATED_180)

# The simulator's own observation keys (docs/ARCHITECTURE.md, Wire; the names are vla.libero's) ...
SIM_KEYS = {
    "agentview_image": ("uint8", (-1, -1, 3)),
    "robot0_eye_in_hand_image": ("uint8", (-1, -1, 3)),
    "robot0_eef_pos": ("float", (3,)),
    "robot0_eef_quat": ("float", (4,)),      # x, y, z, w
    "robot0_gripper_qpos": ("float", (2,)),
}
# ... and openpi's LIBERO keys, accepted as well.
OPENPI_KEYS = {
    "observation/image": ("uint8", (-1, -1, 3)),
    "observation/wrist_image": ("uint8", (-1, -1, 3)),
    "observation/state": ("float", (8,)),    # eef_pos(3) + axis-angle(3) + gripper qpos(2)
}
PROMPT_KEY = "prompt"
SEED_KEY = "seed"
MAX_SEED = 2 ** 63 - 1


def bearer_token(header_value: str | None) -> str | None:
    """The token in an `Authorization` value (`Bearer x` or openpi's `Api-Key x`)."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() in ("bearer", "api-key") and token:
        return token.strip()
    return None


def array_to_tensor(array: np.ndarray, tensor_cls: Any) -> Any:
    """numpy → proto `Tensor` (raw bytes, dtype string, shape)."""
    array = np.asarray(array)
    if array.dtype.kind in ("O", "V", "c"):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"cannot send dtype {array.dtype}")
    return tensor_cls(dtype=array.dtype.str, shape=list(array.shape),
                      data=np.ascontiguousarray(array).tobytes())


def tensor_to_array(tensor: Any, *, key: str = "tensor") -> np.ndarray:
    """proto `Tensor` → numpy, with the byte count checked against dtype and shape."""
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key}: unknown dtype {tensor.dtype!r}") from None
    if dtype.kind in ("O", "V", "c"):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key}: refused dtype {dtype}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key}: negative dimension in shape {shape}")
    expected = math.prod(shape) * dtype.itemsize   # Python ints: no int64 wrap-around
    if expected != len(tensor.data):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                          f"{key}: shape {shape} and dtype {dtype} need {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def observation_to_request(obs: dict[str, Any], request_cls: Any, tensor_cls: Any, request_id: str = "") -> Any:
    """A Python observation dict → proto `InferRequest` (strings apart from arrays)."""
    tensors, strings, seed = {}, {}, {}
    for key, value in obs.items():
        if key == SEED_KEY and value is not None:
            seed["seed"] = int(value)
        elif isinstance(value, str):
            strings[key] = value
        else:
            tensors[key] = array_to_tensor(np.asarray(value), tensor_cls)
    return request_cls(tensors=tensors, strings=strings, request_id=request_id, **seed)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1          # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return [_varint(number << 3 | 2), _varint(len(payload)), payload]


def encode_infer_request(obs: dict[str, Any], request_id: str = "") -> bytes:
    """`InferRequest` wire bytes for `obs`, written directly: the same bytes the generated class
    would produce (a test parses them back), with one copy of each array instead of the three
    that building and serialising the message costs (about 1 ms for a LIBERO observation)."""
    parts: list[bytes | memoryview] = []
    for key, value in obs.items():
        if key == SEED_KEY:
            continue   # field 4, after the maps (protobuf writes fields in number order)
        if isinstance(value, str):
            entry = _field(1, key.encode()) + _field(2, value.encode())
            parts += _field(2, b"".join(entry))
            continue
        array = np.asarray(value)
        if array.dtype.kind in ("O", "V", "c"):
            raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"cannot send dtype {array.dtype}")
        data = memoryview(np.ascontiguousarray(array)).cast("B") if array.size else b""
        tensor = _field(1, array.dtype.str.encode())
        if array.ndim:
            tensor += _field(2, b"".join(_varint(d) for d in array.shape))
        if len(data):
            tensor += _field(3, data)
        tensor_len = sum(len(x) for x in tensor)
        key_part = _field(1, key.encode())
        value_head = [_varint(2 << 3 | 2), _varint(tensor_len)]
        entry_len = sum(len(x) for x in key_part) + sum(len(x) for x in value_head) + tensor_len
        parts += [_varint(1 << 3 | 2), _varint(entry_len), *key_part, *value_head, *tensor]
    if request_id:
        parts += _field(3, request_id.encode())
    if obs.get(SEED_KEY) is not None:
        parts += [_varint(4 << 3), _varint(int(obs[SEED_KEY]))]
    return b"".join(parts)


def request_to_observation(request: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {k: tensor_to_array(t, key=k) for k, t in request.tensors.items()}
    obs.update(dict(request.strings))
    if request.HasField("seed"):
        obs[SEED_KEY] = int(request.seed)
    return obs
