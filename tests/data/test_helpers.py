"""Image and prompt helpers the policy server reuses for its eval transforms."""
from __future__ import annotations

import numpy as np
import pytest

from vla.data import PretrainedTokenizer
from vla.data.image_ops import normalize_images, resize_images
from vla.data.prompts import ImagePromptTokenizer, build_prompt, tokenize_prompt


def test_resize_keeps_smooth_content_and_dtype():
    yy, xx = np.mgrid[0:256, 0:256]
    image = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    out = resize_images([image, image[::-1]], 224, 224)
    assert out.shape == (2, 224, 224, 3) and out.dtype == np.uint8
    # a linear ramp stays a linear ramp: pixel j of 224 samples the source at (j + 0.5) * 256/224 - 0.5
    j = np.arange(224)
    np.testing.assert_allclose(out[0, 100, :, 0], (j + 0.5) * 256 / 224 - 0.5, atol=1.0)
    np.testing.assert_array_equal(resize_images(image, 256, 256)[0], image)  # already the size: unchanged
    with pytest.raises(ValueError, match="uint8"):
        resize_images(image.astype(np.float32), 8, 8)


def test_normalize_per_camera():
    images = np.stack([np.full((4, 4, 3), 100, np.uint8), np.full((4, 4, 3), 200, np.uint8)])
    out = normalize_images(images, [[100, 100, 100], [0, 100, 200]], [[1, 1, 1], [2, 4, 8]])
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out[1, :, 0, 0], [100.0, 25.0, 0.0])
    with pytest.raises(ValueError, match="one \\[r, g, b\\] per camera"):
        normalize_images(images, [[1, 2, 3]] * 3, [[1, 1, 1]] * 3)


def test_prompt_tokenisation(tiny_tokenizer_dir):
    tok = PretrainedTokenizer(str(tiny_tokenizer_dir))
    assert build_prompt("  pick_up the\nbook ") == "pick up the book"
    tokens, mask = tokenize_prompt(tok, "pick up the book", 16)
    assert tokens.dtype == np.int64 and mask.dtype == bool and tokens.shape == (16,)
    n = int(mask.sum())
    assert tokens[0] == tok.bos_token_id and (tokens[n:] == tok.pad_token_id).all() and mask[:n].all()
    short, short_mask = tokenize_prompt(tok, "pick up the book " * 20, 8)
    assert short_mask.all() and len(short) == 8


def test_image_placeholders_are_never_truncated(tiny_tokenizer_dir):
    tok = PretrainedTokenizer(str(tiny_tokenizer_dir))
    encode = ImagePromptTokenizer(tok, max_len=20, num_images=2, tokens_per_image=4)
    assert encode.image_token == "<image>"
    tokens, mask = encode("put the bowl on the plate " * 10)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert tokens[0] == tok.bos_token_id
    assert tokens[1:9].tolist() == [image_id] * 8 and mask.all()
    assert (tokens == image_id).sum() == 8
    with pytest.raises(ValueError, match="leaves no room"):
        ImagePromptTokenizer(tok, max_len=9, num_images=2, tokens_per_image=4)
    with pytest.raises(ValueError, match="no image placeholder token '<IMG_CONTEXT>'"):
        ImagePromptTokenizer(tok, max_len=64, num_images=1, tokens_per_image=4, image_token="<IMG_CONTEXT>")
