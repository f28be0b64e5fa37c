"""vla.libero: the one 180° flip (numpy, and torch's faster copy when torch is loaded) and the 8-dim state."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tests.conftest import REPO
from vla import libero
from vla.wire import codec


def _reference(image: np.ndarray) -> np.ndarray:
    return np.asarray(image)[..., ::-1, ::-1, :]


@pytest.fixture(params=["numpy", "torch"])
def rotate(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setitem(sys.modules, "torch", None)   # a process without torch (the sim client)
    else:
        pytest.importorskip("torch")
    return libero.rotate_180


def test_rotate_180_is_the_render_turned_upside_down(rotate):
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = rotate(img)
    np.testing.assert_array_equal(out[0, 0], img[-1, -1])
    np.testing.assert_array_equal(rotate(out), img)
    assert out.flags.c_contiguous and out.dtype == img.dtype
    np.testing.assert_array_equal(rotate(img[:, ::2]), _reference(img[:, ::2]))   # non-contiguous input
    stack = np.stack([img, img[::-1]])
    np.testing.assert_array_equal(rotate(stack), _reference(stack))                # [N, H, W, C]
    for other in (img.astype(np.float32), img[..., :1], img.astype(">f4")):        # dtypes, channels, byte order
        np.testing.assert_array_equal(rotate(other), _reference(other))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, C\]"):
        rotate(img[..., 0][0])


def test_rotate_180_of_a_read_only_decoded_frame(rotate):
    img = np.random.default_rng(1).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    frame = codec.unpackb(codec.packb({"x": img}))["x"]
    assert not frame.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rotate(frame)
    np.testing.assert_array_equal(out, _reference(img))
    np.testing.assert_array_equal(frame, img)


def test_libero_state_layout():
    axis = np.array([0.0, 0.6, 0.8])
    angle = 0.7
    obs = {libero.EEF_POS_KEY: [0.1, 0.2, 0.3],
           libero.EEF_QUAT_KEY: np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]]),
           libero.GRIPPER_QPOS_KEY: [0.03, -0.03]}
    state = libero.libero_state(obs)
    assert state.shape == (libero.STATE_DIM,) and state.dtype == np.float64
    np.testing.assert_allclose(state, [0.1, 0.2, 0.3, *(axis * angle), 0.03, -0.03], atol=1e-12)
    np.testing.assert_array_equal(libero.quat2axisangle([0, 0, 0, 1.0]), np.zeros(3))


def test_camera_keys_map_to_openpi_keys():
    assert list(libero.OPENPI_CAMERA_KEYS) == list(libero.CAMERA_KEYS)
    assert libero.OPENPI_CAMERA_KEYS[libero.AGENTVIEW_KEY] == "observation/image"


def test_libero_imports_no_torch():
    code = ("import sys; import vla.libero;"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
