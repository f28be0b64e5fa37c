"""`protocol.encode_infer_request` writes exactly the message the generated class would."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vla.wire import protocol
from vla.wire._gen import policy_pb2

DTYPES = ["?", "u1", "i2", "<i4", ">i8", "<f2", "<f4", ">f8", "u8"]


@st.composite
def observations(draw):
    obs = {}
    # `seed` is not a map entry but its own field (an int), tested with the request seed's own tests
    keys = st.text(min_size=1, max_size=12).filter(lambda k: k != protocol.SEED_KEY)
    for key in draw(st.lists(keys, max_size=4, unique=True)):
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


@pytest.mark.parametrize("seed", [0, 1, 2 ** 31 + 5, 2 ** 63 - 1])
def test_request_seed_is_field_4_and_round_trips(seed):
    obs = {"robot0_eef_pos": np.array([1.0, 2.0, 3.0]), "prompt": "x", "seed": seed}
    expected = protocol.observation_to_request(obs, policy_pb2.InferRequest, policy_pb2.Tensor, "r")
    assert expected.HasField("seed") and expected.seed == seed
    encoded = protocol.encode_infer_request(obs, "r")
    assert encoded == expected.SerializeToString(deterministic=True)
    back = protocol.request_to_observation(policy_pb2.InferRequest.FromString(encoded))
    assert back["seed"] == seed and "seed" not in back.get("strings", {})
    no_seed = protocol.request_to_observation(policy_pb2.InferRequest.FromString(
        protocol.encode_infer_request({"prompt": "x"})))
    assert "seed" not in no_seed


@pytest.mark.parametrize("bad", [-1, 2 ** 63, 1.5, "7", True])
def test_a_bad_seed_is_refused_naming_it(bad):
    from policy_server.schema import example_observation, validate_observation
    from vla.wire.errors import PolicyError

    with pytest.raises(PolicyError, match="'seed'"):
        validate_observation(dict(example_observation(), seed=bad))
