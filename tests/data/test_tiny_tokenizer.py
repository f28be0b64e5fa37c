"""The tiny tokenizer is a real HF fast tokenizer that AutoTokenizer loads from disk."""
from __future__ import annotations

import os
import stat

from transformers import AutoTokenizer

from vla.data import PretrainedTokenizer
from vla.data.tiny_tokenizer import build_tiny_tokenizer


def test_autotokenizer_loads_it_with_special_tokens(tmp_path):
    out = build_tiny_tokenizer(tmp_path / "tok", texts=["stack the red block on the blue block"], vocab_size=300)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 300
    assert tok.pad_token == "<pad>" and tok.bos_token == "<bos>" and tok.eos_token == "<eos>"
    assert tok.unk_token == "<unk>"
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id not in (None, tok.unk_token_id)
    ids = tok("stack the red <image> block")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert ids.count(image_id) == 1  # the placeholder stays one token
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "stackthered block".replace(" ", "")
    # byte-level: unseen text still encodes without unknown tokens
    assert tok.unk_token_id not in tok("zebra ünïcode 42")["input_ids"]


def test_rebuild_replaces_and_wrapper_loads(tmp_path):
    out = build_tiny_tokenizer(tmp_path / "tok")
    build_tiny_tokenizer(out, texts=["another corpus"])
    wrapped = PretrainedTokenizer(str(out))
    assert wrapped.pad_id == 0
    assert wrapped.token_id("<image>") is not None and wrapped.token_id("<IMG_CONTEXT>") is None
    assert wrapped("open the drawer")["input_ids"][0] == wrapped.bos_token_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind



def test_the_tokenizer_directory_has_the_mode_mkdir_would_give(tmp_path):
    # Not mkdtemp's 0700: the policy-server container may run as another uid than the trainer.
    umask = os.umask(0)
    os.umask(umask)
    out = build_tiny_tokenizer(tmp_path / "tok")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask != 0o700
