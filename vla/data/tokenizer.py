"""`PretrainedTokenizer`: a `transformers.AutoTokenizer` loaded from a local directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vla.config import register


@register
class PretrainedTokenizer:
    """Wraps `AutoTokenizer.from_pretrained(model_path)`; nothing is fetched from a hub.

    Calls and unknown attributes go to the wrapped tokenizer, so it can be used as one.
    A checkpoint directory whose tokenizer lives in `model_path/tokenizer` is accepted too.
    """

    def __init__(self, model_path: str | os.PathLike, **kwargs: Any):
        from transformers import AutoTokenizer

        path = Path(model_path)
        if not path.is_dir():
            raise ValueError(f"tokenizer directory {str(path)!r} not found (model_path); it must be a local "
                             f"directory with tokenizer files")
        if not any(path.glob("tokenizer*")) and (path / "tokenizer").is_dir():
            path = path / "tokenizer"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load a tokenizer from {str(path)!r} (model_path): {exc}") from None
        self.model_path = str(path)

    def __call__(self, *args: Any, **kwargs: Any):
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer":  # not yet set (during unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        """The padding id (pad token, else eos, else 0)."""
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return int(tid)
        return 0

    def token_id(self, token: str) -> int | None:
        """The id of `token` if the vocabulary has it as one token, else None."""
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or (self.tokenizer.unk_token_id is not None and tid == self.tokenizer.unk_token_id
                           and token != self.tokenizer.unk_token):
            return None
        return int(tid)
