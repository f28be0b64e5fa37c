"""Prompt helpers shared by training transforms and the policy server's eval transforms.

    build_prompt(task)                                   the cleaned instruction text
    tokenize_prompt(tokenizer, prompt, max_len)          -> (int64 [max_len], bool [max_len])
    PromptTokenizer(tokenizer, max_len)(prompt)          the same, memoised per prompt
    ImagePromptTokenizer(tokenizer, max_len, num_images, tokens_per_image)(prompt)
                                                         same, with image placeholder tokens

Sequences are right-padded with the tokenizer's pad id; the mask is True for real tokens.
With images, the layout is `[special prefix] [image_token × tokens_per_image] × num_images
[prompt tokens] [special suffix]`; a model replaces the placeholder positions with its
vision features in order. A prompt too long for `max_len` loses its last text tokens,
never a placeholder.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# Placeholder tokens tried in order when `image_token` is not given: Eagle/InternVL's
# context token, then the generic one (the tiny tokenizer's).
IMAGE_TOKEN_CANDIDATES = ("<IMG_CONTEXT>", "<image>")


class _Memo:
    """A bounded prompt -> (tokens, mask) memo: a dataset has few distinct task strings, and
    the tokenizer call costs more than the rest of a sample's text handling."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, prompt: str, compute) -> tuple[np.ndarray, np.ndarray]:
        hit = self._items.get(prompt)
        if hit is None:
            hit = compute(prompt)
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[prompt] = hit
        return hit[0].copy(), hit[1].copy()


def build_prompt(task: Any) -> str:
    """The language instruction as the model sees it: whitespace collapsed, `_` as spaces."""
    if isinstance(task, bytes):
        task = task.decode("utf-8")
    if not isinstance(task, str):
        raise ValueError(f"task description must be a string, got {type(task).__name__}")
    return " ".join(task.replace("_", " ").split())


def _hf(tokenizer: Any) -> Any:
    return getattr(tokenizer, "tokenizer", tokenizer)


def pad_id_of(tokenizer: Any) -> int:
    tok = _hf(tokenizer)
    for tid in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    return 0


def _pad(ids: list[int], max_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = ids[:max_len]
    tokens = np.full(max_len, pad_id, dtype=np.int64)
    mask = np.zeros(max_len, dtype=bool)
    tokens[:len(ids)] = ids
    mask[:len(ids)] = True
    return tokens, mask


def tokenize_prompt(tokenizer: Any, prompt: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise with the tokenizer's special tokens, truncate to and right-pad to `max_len`."""
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    ids = list(_hf(tokenizer)(prompt, add_special_tokens=True)["input_ids"])
    return _pad(ids, max_len, pad_id_of(tokenizer))


def _special_affixes(tok: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer adds before and after any text (e.g. [bos], [])."""
    plain = list(tok("x", add_special_tokens=False)["input_ids"])
    full = list(tok("x", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def resolve_image_token(tokenizer: Any, image_token: str | None = None) -> tuple[str, int]:
    """The placeholder token and its id; a clear error if the vocabulary lacks it."""
    tok = _hf(tokenizer)
    candidates = (image_token,) if image_token else IMAGE_TOKEN_CANDIDATES
    unk = getattr(tok, "unk_token_id", None)
    for candidate in candidates:
        tid = tok.convert_tokens_to_ids(candidate)
        if tid is not None and (tid != unk or candidate == getattr(tok, "unk_token", None)):
            return candidate, int(tid)
    raise ValueError(f"the tokenizer has no image placeholder token {' or '.join(map(repr, candidates))} "
                     f"(image_token); add it as a special token or name the one it has")


class PromptTokenizer:
    """`tokenize_prompt` with a fixed tokenizer and `max_len`, memoised per prompt string."""

    def __init__(self, tokenizer: Any, max_len: int):
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self._memo = _Memo()

    def __call__(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        return self._memo.get(prompt, lambda p: tokenize_prompt(self.tokenizer, p, self.max_len))


class ImagePromptTokenizer:
    """Tokenise `prompt` behind `num_images` blocks of `tokens_per_image` placeholder tokens."""

    def __init__(self, tokenizer: Any, max_len: int, num_images: int, tokens_per_image: int,
                 image_token: str | None = None):
        if num_images < 0 or tokens_per_image <= 0:
            raise ValueError(f"num_images must be >= 0 and tokens_per_image > 0, got {num_images}, "
                             f"{tokens_per_image}")
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self.image_token, self.image_token_id = resolve_image_token(tokenizer, image_token)
        self.prefix, self.suffix = _special_affixes(_hf(tokenizer))
        self.image_ids = [self.image_token_id] * (num_images * tokens_per_image)
        fixed = len(self.prefix) + len(self.image_ids) + len(self.suffix)
        if fixed >= self.max_len:
            raise ValueError(f"max_len={self.max_len} leaves no room for text after {num_images} images × "
                             f"{tokens_per_image} tokens_per_image (+{fixed - len(self.image_ids)} special tokens)")
        self.text_budget = self.max_len - fixed
        self.pad_id = pad_id_of(tokenizer)
        self._memo = _Memo()

    def __call__(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        return self._memo.get(prompt, self._encode)

    def _encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        text = list(_hf(self.tokenizer)(prompt, add_special_tokens=False)["input_ids"])[:self.text_budget]
        return _pad(self.prefix + self.image_ids + text + self.suffix, self.max_len, self.pad_id)
