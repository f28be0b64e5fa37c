import filecmp
import json
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.conftest import REPO
from vla.wire import codec, protocol
from vla.wire._gen import policy_pb2
from vla.wire.errors import ErrorCode, PolicyError

NUMERIC = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", ">i4", ">f8"]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=300, deadline=None)
@given(arrays())
def test_codec_round_trips_every_numeric_dtype_and_shape(arr):
    out = codec.unpackb(codec.packb({"x": arr, "nested": [arr, {"y": arr}]}))
    for got in (out["x"], out["nested"][0], out["nested"][1]["y"]):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([d for d in NUMERIC[:-2] if d != "f8"]), st.integers(-100, 100))
def test_numpy_scalars_round_trip(dtype, value):
    # np.float64 subclasses float, so msgpack (and openpi) send it as a plain float.
    scalar = np.array(abs(value) if dtype[0] in "u?" else value).astype(dtype)[()]
    out = codec.unpackb(codec.packb(scalar))
    assert type(out) is type(scalar) and out == scalar


def openpi_layout(arr):
    """Bytes as openpi-client's msgpack_numpy.pack_array writes them (its documented layout)."""
    return msgpack.packb({b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str,
                          b"shape": arr.shape}, use_bin_type=True)


def test_encodes_exactly_as_openpi_and_decodes_openpi_bytes():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert codec.packb(img) == openpi_layout(img)
    state = np.linspace(0, 1, 8, dtype=np.float32)
    frame = msgpack.packb({"observation/state": {b"__ndarray__": True, b"data": state.tobytes(),
                                                 b"dtype": "<f4", b"shape": [8]},
                           "step": {b"__npgeneric__": True, b"data": 3, b"dtype": "<i8"},
                           "prompt": "pick up the bowl"}, use_bin_type=True)
    out = codec.unpackb(frame)
    np.testing.assert_array_equal(out["observation/state"], state)
    assert out["step"] == np.int64(3) and isinstance(out["step"], np.int64)
    assert out["prompt"] == "pick up the bowl"


@pytest.mark.parametrize("arr", [np.array([object()], dtype=object), np.zeros(2, dtype="V4"),
                                 np.zeros(2, dtype=np.complex64)])
def test_refuses_object_void_complex(arr):
    with pytest.raises(PolicyError) as err:
        codec.packb({"x": arr})
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and "refused" in err.value.message


def test_decode_refuses_object_dtype_and_bad_sizes():
    bad = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(PolicyError, match="refused dtype object"):
        codec.unpackb(bad)
    short = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(PolicyError, match=r"needs 8 bytes, got 7"):
        codec.unpackb(short)
    with pytest.raises(PolicyError, match="malformed msgpack frame"):
        codec.unpackb(b"\xc1\xff\x00")


def test_frame_size_limits():
    big = np.zeros(1000, dtype=np.uint8)
    with pytest.raises(PolicyError) as err:
        codec.packb(big, max_bytes=500)
    assert err.value.code is ErrorCode.RESOURCE_EXHAUSTED and "over the limit of 500" in err.value.message
    data = codec.packb(big)
    with pytest.raises(PolicyError, match="over the limit of 100"):
        codec.unpackb(data, max_bytes=100)


def test_proto_tensor_round_trip_and_size_check():
    arr = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    t = protocol.array_to_tensor(arr, policy_pb2.Tensor)
    np.testing.assert_array_equal(protocol.tensor_to_array(t), arr)
    t.shape[:] = [4, 5, 4]
    with pytest.raises(PolicyError, match=r"img: shape \(4, 5, 4\) and dtype uint8 need 80 bytes, got 60"):
        protocol.tensor_to_array(t, key="img")
    req = protocol.observation_to_request({"a": arr, "prompt": "p"}, policy_pb2.InferRequest, policy_pb2.Tensor)
    obs = protocol.request_to_observation(policy_pb2.InferRequest.FromString(req.SerializeToString()))
    assert obs["prompt"] == "p"
    np.testing.assert_array_equal(obs["a"], arr)


def test_server_info_round_trips_through_dict_and_proto():
    from vla.wire.server_info import InputSpec, ServerInfo

    info = ServerInfo(model="PI0FlowMatching", checkpoint="c.pt", chunk_length=10, action_dim=7,
                      inputs=(InputSpec("agentview_image", "uint8", (-1, -1, 3), True, "main camera"),),
                      image_orientation="as_rendered", model_version="abc", statistic_name="libero_10_no_noops",
                      extra={"peer_key": [1, 2]})
    d = info.to_dict()
    assert d["inputs"] == [{"key": "agentview_image", "dtype": "uint8", "shape": [-1, -1, 3], "required": True,
                            "description": "main camera"}]
    assert d["statistic_name"] == "libero_10_no_noops" and d["peer_key"] == [1, 2]
    assert "scripted" not in d and "extra" not in d          # unstated fields stay off the wire
    assert ServerInfo.from_dict(json.loads(json.dumps(d))) == info
    msg = info.to_proto()
    assert json.loads(msg.metadata_json) == {"statistic_name": "libero_10_no_noops", "peer_key": [1, 2]}
    assert ServerInfo.from_proto(policy_pb2.ServerInfoResponse.FromString(msg.SerializeToString())) == info


def test_server_info_reads_a_peer_that_declares_nothing():
    from vla.wire.server_info import ServerInfo

    info = ServerInfo.from_dict({"action_horizon": 10})      # openpi's own server metadata
    assert info.inputs == () and info.image_orientation == "" and info.chunk_length == 0
    assert info.extra == {"action_horizon": 10} and info.to_dict()["action_horizon"] == 10


def test_bearer_token_parsing():
    assert protocol.bearer_token("Bearer abc") == "abc"
    assert protocol.bearer_token("Api-Key abc") == "abc"
    assert protocol.bearer_token("Basic abc") is None
    assert protocol.bearer_token(None) is None


def test_generated_code_is_current(tmp_path):
    subprocess.run(["bash", str(REPO / "scripts/gen_proto.sh"), str(tmp_path)], check=True, cwd=REPO,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "VENV": str(REPO / ".venv")})
    for name in ("policy_pb2.py", "policy_pb2.pyi", "policy_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / name, REPO / "vla/wire/_gen" / name, shallow=False), \
            f"vla/wire/_gen/{name} is stale: run `make proto`"


def test_wire_imports_no_torch():
    code = ("import sys, vla.wire, vla.wire.client, vla.wire._gen.policy_pb2_grpc, vla.config, vla.normalize;"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
