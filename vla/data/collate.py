"""`DictCollator`: a list of sample dicts -> one batch dict (tensors for `keys`, lists for `meta_keys`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from vla.config import register
from vla.data.errors import DatasetError


def _to_tensor(values: list[Any], key: str) -> torch.Tensor:
    try:
        arrays = [np.asarray(v) for v in values]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise DatasetError(f"DictCollator: {key!r} differs in shape across the batch: {sorted(shapes)}")
        stacked = np.stack(arrays)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"DictCollator: cannot stack {key!r}: {exc}") from None
    if stacked.dtype == np.float64:
        stacked = stacked.astype(np.float32)  # models train in float32 or lower
    if stacked.dtype.kind in "iu" and stacked.dtype != np.uint8:
        stacked = stacked.astype(np.int64)
    if stacked.dtype == object:
        raise DatasetError(f"DictCollator: {key!r} holds non-numeric values; list it in meta_keys")
    return torch.from_numpy(np.ascontiguousarray(stacked))


@register
class DictCollator:
    """Stack `keys` into tensors [B, ...] and gather `meta_keys` into lists.

    A key no sample has is left out (configs list keys, like `observation.eepose`, that only
    some datasets carry); a key only some samples have is an error.
    """

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = ()):
        self.keys = list(keys)
        self.meta_keys = list(meta_keys)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise DatasetError("DictCollator: empty batch")
        batch: dict[str, Any] = {}
        for key in self.keys:
            have = [key in s for s in samples]
            if not any(have):
                continue
            if not all(have):
                raise DatasetError(f"DictCollator: {key!r} is in {sum(have)} of {len(samples)} samples")
            batch[key] = _to_tensor([s[key] for s in samples], key)
        for key in self.meta_keys:
            if any(key in s for s in samples):
                batch[key] = [s.get(key) for s in samples]
        return batch
