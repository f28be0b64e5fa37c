"""`protocol.encode_infer_request` writes exactly the message the generated class would."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vla.wire import protocol
from vla.wire._gen import policy_pb2

DTYPES = ["?", "u1", "i2", "<i4", ">i8", "<f2", "<f4", ">f8", "u8"]


@st.composite
def observations(draw):
    obs = {}
    for key in draw(st.lists(st.text(min_size=1, max_size=12), max_size=4, unique=True)):
        if draw(st.booleans()):
            obs[key] = draw(st.text(max_size=30))
        else:
            dtype = np.dtype(draw(st.sampled_from(DTYPES)))
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
            obs[key] = draw(hnp.arrays(dtype, shape))
    return obs


@settings(max_examples=200, deadline=None)
@given(observations(), st.text(max_size=20))
def test_encoded_bytes_parse_to_the_generated_message(obs, request_id):
    expected = protocol.observation_to_request(obs, policy_pb2.InferRequest, policy_pb2.Tensor, request_id)
    got = policy_pb2.InferRequest.FromString(protocol.encode_infer_request(obs, request_id))
    assert got == expected
    back = protocol.request_to_observation(got)
    for key, value in obs.items():
        if isinstance(value, str):
            assert back[key] == value
        else:
            assert back[key].dtype == value.dtype and back[key].shape == value.shape
            np.testing.assert_array_equal(back[key], value)


def test_libero_observation_and_non_contiguous_arrays():
    img = np.arange(256 * 256 * 3, dtype=np.uint32).astype(np.uint8).reshape(256, 256, 3)
    obs = {"agentview_image": img[::-1, ::-1], "robot0_eef_pos": np.array([1.0, -2.0, 3.0]), "prompt": "open it"}
    got = policy_pb2.InferRequest.FromString(protocol.encode_infer_request(obs, "r1"))
    np.testing.assert_array_equal(protocol.tensor_to_array(got.tensors["agentview_image"]), img[::-1, ::-1])
    assert got.strings["prompt"] == "open it" and got.request_id == "r1"
