"""A few hundred random frames over the websocket and HTTP: each gets a taxonomy error (never
a dropped connection or a 500), and a valid request succeeds afterwards."""
from __future__ import annotations

import json
import urllib.request

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_server.schema import example_observation
from tests.server.conftest import client
from vla.wire import codec, protocol
from vla.wire.errors import ErrorCode

CODES = {c.value for c in ErrorCode}
VALID = example_observation(16, 16)
KEYS = list(VALID) + ["observation/image", "observation/state", "fault", "replay_step", ""]

ndarray_maps = st.fixed_dictionaries({
    b"__ndarray__": st.just(True),
    b"data": st.binary(max_size=64),
    b"dtype": st.sampled_from(["<f4", "|u1", "<f8", "|O", "<c8", "V3", "bogus", "<i8", ">f4"]),
    b"shape": st.lists(st.one_of(st.integers(-2, 20), st.integers(0, 2**64 - 1)), max_size=4),
})
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=20),
                   st.binary(max_size=40), ndarray_maps)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)


def _mutated(draw_key, draw_value):
    obs = dict(VALID)
    obs[draw_key] = draw_value
    return msgpack.packb(obs, default=codec._pack_default, use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: msgpack.packb(v, use_bin_type=True), values),
    st.builds(lambda d: msgpack.packb(d, use_bin_type=True), st.dictionaries(st.sampled_from(KEYS), values, max_size=6)),
    st.builds(_mutated, st.sampled_from(KEYS), values),
)


@pytest.fixture(scope="module")
def ws_client(noop_server):
    c = client(noop_server, "ws")
    c.server_info()
    yield c
    c.close()


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=frames)
def test_fuzz_websocket_frames(ws_client, frame):
    ws_client._ws.send(frame)
    reply = ws_client._ws.recv(timeout=10)
    if isinstance(reply, str):
        assert json.loads(reply)["code"] in CODES - {"INTERNAL"}, reply
    else:
        assert codec.unpackb(reply)["actions"].shape == (5, 7)   # a mutation that stayed valid


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=frames)
def test_fuzz_http_bodies(noop_server, frame):
    req = urllib.request.Request(f"http://127.0.0.1:{noop_server.http_port}{protocol.INFER_PATH}", data=frame,
                                 headers={"Content-Type": protocol.MSGPACK_CONTENT_TYPE}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert codec.unpackb(resp.read())["actions"].shape == (5, 7)
    except urllib.error.HTTPError as exc:
        assert exc.code in (400, 429), exc.code
        assert codec.unpackb(exc.read())["error"]["code"] in CODES - {"INTERNAL"}


def test_valid_request_after_fuzz(noop_server, ws_client):
    for transport in ("grpc", "http"):
        with client(noop_server, transport) as c:
            assert c.infer(VALID)["actions"].shape == (5, 7)
    assert ws_client.infer(VALID)["actions"].shape == (5, 7)
    assert np.isfinite(ws_client.infer(VALID)["actions"]).all()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=st.one_of(st.binary(max_size=200), frames))
def test_fuzz_grpc_messages(noop_server, frame):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{noop_server.grpc_port}") as ch:
        call = ch.unary_unary(f"/{protocol.GRPC_SERVICE}/Infer", request_serializer=bytes,
                              response_deserializer=bytes)
        try:
            call(frame, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code().name in CODES - {"INTERNAL"}, (exc.code(), exc.details())
