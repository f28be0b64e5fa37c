"""Image helpers shared by training transforms and the policy server's eval transforms
(LIBERO's 180° flip is `vla.libero.rotate_180`).

One implementation of each step, so a camera frame is processed identically at training and
at serving time:

    resize_images(images, height, width)         uint8 [N, H, W, 3] -> uint8 [N, h, w, 3]
    normalize_images(images, means, stds)         uint8 [N, H, W, 3] -> float32 [N, 3, H, W]

Resizing uses torch (no torchvision): bilinear with antialiasing, like PIL's resize when
shrinking, computed on uint8 and rounded to uint8 as a camera frame would be.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def as_image_stack(images) -> np.ndarray:
    """A list/array of H×W×3 uint8 images (or one image) as uint8 [N, H, W, 3]."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if isinstance(images, (list, tuple)):
        shapes = {np.asarray(im).shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"images differ in shape {sorted(shapes)}; resize them first")
        images = np.stack([np.asarray(im) for im in images])
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images as [N, H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images


def resize_images(images, height: int, width: int) -> np.ndarray:
    """Resize uint8 [N, H, W, 3] (or a list of H×W×3) to uint8 [N, height, width, 3], no padding."""
    stack = as_image_stack(images)
    if stack.shape[1:3] == (height, width):
        return stack
    # uint8 channels-last input takes torch's fast antialiased path (about 10× the float path).
    x = torch.from_numpy(np.ascontiguousarray(stack)).permute(0, 3, 1, 2)
    y = F.interpolate(x, size=(int(height), int(width)), mode="bilinear", align_corners=False, antialias=True)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def _per_camera(values: Sequence, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, 3):
        raise ValueError(f"{name}: need one [r, g, b] per camera ({n} cameras), got shape {arr.shape}")
    return arr


def normalize_images(images, means: Sequence, stds: Sequence) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] = (x - mean[cam]) / std[cam], means/stds in 0..255."""
    stack = as_image_stack(images)
    n, h, w, _ = stack.shape
    mean = _per_camera(means, n, "means")
    std = _per_camera(stds, n, "stds")
    if np.any(std <= 0):
        raise ValueError(f"stds must be positive, got {std.tolist()}")
    out = np.empty((n, 3, h, w), dtype=np.float32)
    np.subtract(stack.transpose(0, 3, 1, 2), mean[:, :, None, None], out=out, casting="unsafe")
    out *= (1.0 / std)[:, :, None, None]
    return out


def random_shift_images(images, pad: int, generator: torch.Generator | None = None) -> np.ndarray:
    """DrQ-style shift augmentation: pad each uint8 [N, H, W, 3] image by `pad` pixels (edge
    replicated) and crop an H×W window at a random offset, drawn per camera from `generator`
    (torch's default RNG if None: in a DataLoader worker, the worker's seeded RNG)."""
    stack = as_image_stack(images)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return stack
    n, h, w, _ = stack.shape
    padded = np.pad(stack, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return np.stack([padded[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
