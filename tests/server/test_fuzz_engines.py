"""Bad input against real model engines: the tiny π0 and the tiny GR00T, each loaded from a work
dir, behind all three transports.

Hypothesis mutates a valid LIBERO observation (wrong dtypes and shapes, missing and extra keys,
huge and empty images, NaN/inf and extreme state, non-UTF-8 and over-long prompts, object
arrays) and sends it as a msgpack-numpy frame (websocket, HTTP) or an InferRequest (gRPC), whole
or truncated. Every frame gets a reply with a taxonomy code other than INTERNAL, or valid finite
actions; no traceback reaches the client; afterwards the engine answers the valid observation
on every transport with the same actions as before the fuzz.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_server.batcher import BatcherConfig
from policy_server.engine import load_engine
from tests.server.conftest import TRANSPORTS, client, start_server
from tests.server.test_engine import sim_obs
from tests.server.test_engine_pi0 import make_pi0_work_dir
from vla.data.tiny_tokenizer import build_tiny_tokenizer
from vla.wire import codec, protocol
from vla.wire._gen import policy_pb2
from vla.wire.errors import ErrorCode

pytestmark = pytest.mark.slow   # two engines, three transports, a few hundred frames

CODES = {c.value for c in ErrorCode} - {"INTERNAL"}
VALID, _ = sim_obs()
VALID["seed"] = 7   # fresh noise per request is the default: a request seed makes the answer repeatable
ARRAY_KEYS = [k for k, v in VALID.items() if isinstance(v, np.ndarray)]
# A str of this length is swapped for bytes that are not UTF-8 after encoding.
MARK = "\u2603MARK\u2603"
NOT_UTF8 = b"\xff\xfe\x80\xc3(\xa0\xa1\xe2\x28\xa1"
assert len(MARK.encode()) == len(NOT_UTF8)


def _raw_ndarray(dtype: str, shape: list[int], data: bytes) -> dict:
    """A msgpack-numpy array map written by hand (so it can lie about dtype, shape and size)."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


dtypes = st.sampled_from(["|u1", "<i2", "<f2", "<f4", "<f8", ">f8", "|b1", "<i8", "<c8", "|O", "V3", "<U4", "bogus"])
shapes = st.lists(st.integers(0, 70), max_size=4)
arrays = st.one_of(
    # honest arrays of a random dtype and shape
    st.builds(lambda dt, shape: np.zeros(shape, dtype=dt), st.sampled_from(["u1", "i2", "f2", "f4", "f8", ">f8", "?"]),
              st.lists(st.integers(0, 9), max_size=4)),
    # hand-written maps: wrong byte counts, object/void/complex dtypes, nonsense
    st.builds(lambda dt, shape, data: _raw_ndarray(dt, shape, data), dtypes, shapes, st.binary(max_size=64)),
)
images = st.one_of(
    st.builds(lambda h, w: np.zeros((h, w, 3), np.uint8), st.integers(0, 3), st.integers(0, 3)),   # empty, tiny
    st.just(np.zeros((2049, 1, 3), np.uint8)), st.just(np.zeros((1, 4096, 3), np.uint8)),          # over the limit
    st.just(np.full((1024, 1024, 3), 255, np.uint8)),   # big but legal (3 MiB: under the 8 MiB request cap)
    st.just(np.zeros((64, 64, 4), np.uint8)), st.just(np.zeros((64, 64, 3), np.float32)),
)
EXTREMES = [np.nan, np.inf, -np.inf, 1e300, -1e300, 3.4e38, 1e30, 0.0, 1e-320]


def _filled(base: np.ndarray, fill: float, one: bool) -> np.ndarray:
    """`base` (right size and dtype) with one element, or all of them, set to `fill`."""
    out = np.array(base, dtype=np.float64)
    if one:
        out[0] = fill
    else:
        out[:] = fill
    return out


def _openpi(state: np.ndarray) -> dict:
    """The valid observation in openpi's layout, with this 8-dim state."""
    return {"observation/image": VALID["agentview_image"][::-1, ::-1].copy(),
            "observation/wrist_image": VALID["robot0_eye_in_hand_image"][::-1, ::-1].copy(),
            "observation/state": state, "prompt": VALID["prompt"]}


state_sets = st.builds(lambda key, fill, one: ("set", key, _filled(VALID[key], fill, one)),
                       st.sampled_from(ARRAY_KEYS[2:]), st.sampled_from(EXTREMES), st.booleans())
openpi_layouts = st.builds(lambda fill, one: ("layout", _openpi(_filled(np.zeros(8), fill, one))),
                           st.sampled_from(EXTREMES), st.booleans())
prompts = st.one_of(
    st.just(MARK), st.just(""), st.just("   "), st.text(max_size=30),
    st.builds(lambda n: "pick up the book " * n, st.sampled_from([20, 60, 117, 118])),   # over the tokenizer's max
    st.just("x" * 2001), st.just("\u00e9" * 1999),
    st.binary(max_size=20), st.integers(-2**63, 2**64 - 1), st.none(), st.lists(st.text(max_size=5), max_size=3),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=10),
                    st.binary(max_size=10), st.lists(st.integers(-2**63, 2**63 - 1), max_size=3))
mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(list(VALID))),
    st.tuples(st.just("extra"), st.text(max_size=12), st.one_of(scalars, arrays)),
    st.tuples(st.just("set"), st.sampled_from(ARRAY_KEYS), st.one_of(arrays, scalars)),
    st.tuples(st.just("set"), st.sampled_from(ARRAY_KEYS[:2]), images),
    state_sets, openpi_layouts,
    st.tuples(st.just("set"), st.just("prompt"), prompts),
    st.tuples(st.just("openpi"), st.sampled_from(["observation/image", "observation/state"]), st.one_of(arrays, images)),
)
cases = st.tuples(st.lists(mutations, min_size=1, max_size=3), st.one_of(st.none(), st.floats(0.0, 1.0)))


def _mutate(muts) -> dict:
    obs = dict(VALID)
    for m in muts:
        if m[0] == "drop":
            obs.pop(m[1], None)
        elif m[0] == "layout":   # start over from openpi's layout
            obs = dict(m[1])
        else:                    # "set", or "openpi": an openpi key beside the sim ones
            obs[m[1]] = m[2]
    return obs


def _not_utf8(frame: bytes) -> bytes:
    return frame.replace(MARK.encode(), NOT_UTF8)


def _truncate(frame: bytes, cut: float | None) -> bytes:
    return frame if cut is None else frame[:int(len(frame) * cut)]


def msgpack_frame(muts, cut) -> bytes:
    obs = _mutate(muts)
    frame = msgpack.packb(obs, default=lambda o: codec._pack_default(o) if not isinstance(o, np.ndarray)
                          or o.dtype.kind not in "OVc" else _raw_ndarray(o.dtype.str, list(o.shape), b""),
                          use_bin_type=True)
    return _truncate(_not_utf8(frame), cut)


def grpc_frame(muts, cut) -> bytes:
    """The mutated observation as an InferRequest: arrays as Tensors (hand-written maps become Tensors
    that carry the same lie), strings as strings; anything else has no proto form and becomes a
    string or is dropped, as a proto client would have to."""
    req = policy_pb2.InferRequest()
    for key, value in _mutate(muts).items():
        if isinstance(value, np.ndarray):
            req.tensors[key].CopyFrom(policy_pb2.Tensor(dtype=value.dtype.str, shape=list(value.shape),
                                                        data=value.tobytes()))
        elif isinstance(value, dict):
            req.tensors[key].CopyFrom(policy_pb2.Tensor(dtype=value[b"dtype"], shape=value[b"shape"],
                                                        data=value[b"data"]))
        elif isinstance(value, str):
            req.strings[key] = value
        elif isinstance(value, bytes):
            req.strings[key] = MARK
    return _truncate(_not_utf8(req.SerializeToString()), cut)


# -- the engines ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module", params=["full", "gr00t"], ids=["pi0", "gr00t"])
def served(request, tmp_path_factory, tok):
    """(server, chunk_length, the valid observation's actions on each transport before the fuzz)."""
    root = tmp_path_factory.mktemp(request.param) / "run"
    make_pi0_work_dir(root, tok, request.param)
    engine = load_engine(root)
    server = start_server(engine, batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=2))
    before = {}
    for transport in TRANSPORTS:
        with client(server, transport, timeout_s=60) as c:
            before[transport] = c.infer(VALID)["actions"]
    yield server, engine.chunk_length, before
    server.stop()


def _check_ok(actions: np.ndarray, chunk: int) -> None:
    assert actions.shape == (chunk, 7) and actions.dtype == np.float32, actions.shape
    assert np.isfinite(actions).all(), "a reply with non-finite actions"


def _check_error(code: str, message: str) -> None:
    assert code in CODES, (code, message)
    assert "Traceback" not in message and 'File "' not in message, message


EXAMPLES = 60


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases)
def test_websocket(served, case):
    server, chunk, _ = served
    ws = _ws(server)
    ws._ws.send(msgpack_frame(*case))
    reply = ws._ws.recv(timeout=60)
    if isinstance(reply, str):
        err = json.loads(reply)
        _check_error(err["code"], err["message"])
    else:
        _check_ok(codec.unpackb(reply)["actions"], chunk)


_WS = {}


def _ws(server):
    """One websocket per server for the whole fuzz: an error must leave the connection usable."""
    if server not in _WS:
        _WS[server] = client(server, "ws", timeout_s=60)
        _WS[server].server_info()
    return _WS[server]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases)
def test_http(served, case):
    server, chunk, _ = served
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{protocol.INFER_PATH}",
                                 data=msgpack_frame(*case), method="POST",
                                 headers={"Content-Type": protocol.MSGPACK_CONTENT_TYPE})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            _check_ok(codec.unpackb(resp.read())["actions"], chunk)
    except urllib.error.HTTPError as exc:
        assert exc.code in (400, 429), exc.code
        err = codec.unpackb(exc.read())["error"]
        _check_error(err["code"], err["message"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases)
def test_grpc(served, case):
    import grpc

    server, chunk, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        call = ch.unary_unary(f"/{protocol.GRPC_SERVICE}/Infer", request_serializer=bytes,
                              response_deserializer=policy_pb2.InferResponse.FromString)
        try:
            reply = call(grpc_frame(*case), timeout=60)
        except grpc.RpcError as exc:
            _check_error(exc.code().name, exc.details() or "")
        else:
            _check_ok(protocol.tensor_to_array(reply.actions), chunk)


def test_the_engine_answers_as_before_after_the_fuzz(served):
    server, chunk, before = served
    for transport in TRANSPORTS:
        with client(server, transport, timeout_s=60) as c:
            np.testing.assert_array_equal(c.infer(VALID)["actions"], before[transport])
    ws = _WS.pop(server, None)
    if ws is not None:   # the fuzzed connection itself still answers, with the same actions
        np.testing.assert_array_equal(ws.infer(VALID)["actions"], before["ws"])
        ws.close()
