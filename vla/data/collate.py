"""`DictCollator`: a list of sample dicts -> one batch dict (tensors for `keys`, lists for `meta_keys`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from vla.config import register
from vla.data.errors import DatasetError


def _to_tensor(values: list[Any], key: str) -> torch.Tensor:
    arrays = [np.asarray(v) for v in values]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"DictCollator: {key!r} differs in shape across the batch: {sorted(shapes)}")
    dtype = arrays[0].dtype
    if dtype == object or any(a.dtype == object for a in arrays):
        raise DatasetError(f"DictCollator: {key!r} holds non-numeric values; list it in meta_keys")
    dtype = np.result_type(*arrays)
    if dtype == np.float64:
        dtype = np.dtype(np.float32)  # models train in float32 or lower
    elif dtype.kind in "iu" and dtype != np.uint8:
        dtype = np.dtype(np.int64)
    out = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype)
    if get_worker_info() is not None:
        # In a DataLoader worker, build the batch in shared memory directly, as torch's
        # default_collate does: sending it to the main process then copies nothing.
        out.share_memory_()
    try:
        np.stack(arrays, out=out.numpy(), casting="same_kind")
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"DictCollator: cannot stack {key!r}: {exc}") from None
    return out


PROVENANCE_KEYS = ("episode_index", "frame_index", "data_root")


@register
class DictCollator:
    """Stack `keys` into tensors [B, ...] and gather `meta_keys` into lists.

    A key no sample has is left out (configs list keys, like `observation.eepose`, that only
    some datasets carry); a key only some samples have is an error. The samples' provenance
    (`episode_index`, `frame_index`, `data_root`) always rides along as lists, so an error met on
    a batch (a non-finite loss) can name the frames it came from.
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
        for key in [*self.meta_keys, *(k for k in PROVENANCE_KEYS if k not in self.meta_keys)]:
            if key not in batch and any(key in s for s in samples):
                batch[key] = [s.get(key) for s in samples]
        return batch
