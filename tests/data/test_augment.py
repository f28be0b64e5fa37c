"""RandomShiftImages: the training-only shift augmentation of the small from-scratch configs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla.config import build
from vla.data.image_ops import random_shift_images


def _ramp(n: int = 2, size: int = 16) -> np.ndarray:
    """Each pixel encodes its own (row, col), so a crop's offset can be read back."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.stack([rows * 10, cols * 10, np.full_like(rows, 7)], axis=-1).astype(np.uint8)
    return np.stack([img] * n)


def test_shift_is_a_crop_of_the_edge_padded_image():
    x = _ramp()
    g = torch.Generator().manual_seed(0)
    y = random_shift_images(x, 3, generator=g)
    assert y.shape == x.shape and y.dtype == np.uint8
    offsets = torch.randint(0, 7, (2, 2), generator=torch.Generator().manual_seed(0)).tolist()
    for cam, (dy, dx) in enumerate(offsets):
        padded = np.pad(x[cam], ((3, 3), (3, 3), (0, 0)), mode="edge")
        np.testing.assert_array_equal(y[cam], padded[dy:dy + 16, dx:dx + 16])


def test_each_camera_and_call_draws_its_own_offset():
    x = _ramp(n=4)
    g = torch.Generator().manual_seed(1)
    outs = [random_shift_images(x, 4, generator=g) for _ in range(8)]
    # 8 calls x 4 cameras from 81 possible offsets: all equal would mean one shared draw.
    assert len({o[c].tobytes() for o in outs for c in range(4)}) > 4
    assert not all(np.array_equal(o, x) for o in outs)


def test_pad_zero_is_the_identity_and_bad_pad_is_refused():
    x = _ramp()
    np.testing.assert_array_equal(random_shift_images(x, 0), x)
    t = build(dict(type="RandomShiftImages", pad=0))
    np.testing.assert_array_equal(t({"images": x})["images"], x)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="pad"):
            build(dict(type="RandomShiftImages", pad=bad))


def test_the_small_pi0_config_shifts_only_in_training():
    from vla.config import Config

    repo = Path(__file__).resolve().parents[2]
    cfg = Config.fromfile(repo / "configs/pi0/pi0_paligemma_libero_object_small.py").to_plain()
    train = [t["type"] for t in cfg["train_dataloader"]["dataset"]["datasets"]["transforms"]]
    assert train.index("ResizeImages") < train.index("RandomShiftImages") < train.index("NormalizeImages")
    assert "RandomShiftImages" not in [t["type"] for t in cfg["eval"]["dataset"]["transforms"]]
