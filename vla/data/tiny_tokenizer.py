"""A small real Hugging Face fast tokenizer for tests and the demo (nothing is downloaded).

    path = build_tiny_tokenizer("work_dirs/demo/tokenizer", texts=task_strings)
    tok = transformers.AutoTokenizer.from_pretrained(path)

Byte-level BPE trained with `tokenizers` on the given texts (plus LIBERO's task strings), so
any text encodes without unknown tokens. Special tokens: `<pad>` (id 0), `<bos>`, `<eos>`,
`<unk>` and the image placeholder `<image>`; encoding with special tokens prepends `<bos>`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from vla.io import DIR_MODE

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<bos>", "<eos>", "<unk>", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE]
DEFAULT_VOCAB_SIZE = 512


def _default_texts() -> list[str]:
    from vla.data.libero import LIBERO_10_TASKS

    return list(LIBERO_10_TASKS) + ["pick up the object and place it on the plate",
                                    "open the drawer", "close the microwave", "What action should the robot take?"]


def build_tiny_tokenizer(out_dir: str | os.PathLike, texts: Iterable[str] | None = None,
                         vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train and save the tokenizer to `out_dir` (replacing one already there); returns `out_dir`.

    `len(AutoTokenizer.from_pretrained(out_dir)) <= vocab_size`, so a model whose embedding
    table has `vocab_size` rows accepts every id.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts or []) + _default_texts()
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} for a byte-level BPE")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, extra_special_tokens=[IMAGE], padding_side="right")

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(staging, DIR_MODE)  # not mkdtemp's 0700: the server may run as another uid
        fast.save_pretrained(str(staging))
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def build_tiny_tokenizer_for_dataset(out_dir: str | os.PathLike, data_root: str | os.PathLike,
                                     vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """`build_tiny_tokenizer` on the task strings of the LeRobot dataset at `data_root` (the demo's
    tokenizer step, and the trainer image's when its dataset comes without one)."""
    from vla.data.reader import LeRobotReader

    reader = LeRobotReader(data_root)
    try:
        texts = [reader.task(i) for i in range(reader.info["total_tasks"])]
    finally:
        reader.close()
    return build_tiny_tokenizer(out_dir, texts=texts, vocab_size=vocab_size)
