"""`DistributedRepeatingDataset`: statistics plus a rank-aware, resumable epoch order.

Each epoch is a permutation of every sample, fixed by (`seed`, epoch); it is repeated
from its start until it divides evenly among the ranks, and rank r takes every
world_size-th entry from position r. Inside a rank, DataLoader workers take whole batches
in turn (worker w yields batches w, w + W, ...), which the DataLoader returns in order, so
after k batches exactly the first k × batch_size samples of the rank's order are consumed
and `set_epoch(epoch, skip=k * batch_size)` resumes with no sample lost or repeated.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from vla.config import build, register
from vla.data.parquet_dataset import ParquetDataset
from vla.data.statistics import compute_dataset_statistics, write_dataset_statistics
from vla.normalize import DatasetStatistics, load_statistics


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@register
class DistributedRepeatingDataset(IterableDataset):
    """Wrap a dataset (or a list, concatenated); compute its statistics under `statistic_name`.

    `dataset_statistics` may be given instead (a path to a statistics file or a
    DatasetStatistics), e.g. by ranks other than 0 after rank 0 wrote the file.
    """

    def __init__(self, datasets: Any, statistic_keys: Sequence[str], name_mappings: Mapping[str, Any] | None = None,
                 shuffle: bool = True, seed: int = 42, statistic_name: str = "private",
                 dataset_statistics: str | os.PathLike | DatasetStatistics | None = None,
                 action_norm_mask: Sequence[bool] | None = None):
        items = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        self.datasets = [build(d) if isinstance(d, dict) else d for d in items]
        if not self.datasets or not all(hasattr(d, "__getitem__") and hasattr(d, "__len__") for d in self.datasets):
            raise ValueError("datasets must be one dataset (or a list) with __getitem__ and __len__")
        self.statistic_keys = list(statistic_keys)
        self.name_mappings = dict(name_mappings or {})
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.statistic_name = statistic_name
        if dataset_statistics is None:
            readers = [r for d in self.datasets for r in getattr(d, "readers", [])]
            if not readers:
                raise ValueError("cannot compute statistics: the datasets have no LeRobot readers; "
                                 "pass dataset_statistics")
            self.statistics = compute_dataset_statistics(readers, self.statistic_keys, self.name_mappings,
                                                         action_norm_mask=action_norm_mask)
        elif isinstance(dataset_statistics, DatasetStatistics):
            self.statistics = dataset_statistics
        else:
            self.statistics = load_statistics(dataset_statistics, statistic_name)
        for d in self.datasets:
            if isinstance(d, ParquetDataset):
                d.set_statistics({d.statistic_name: self.statistics})
        self._sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)])
        if self.total_len == 0:
            raise ValueError("the wrapped datasets hold no samples")
        self.epoch = 0
        self.skip = 0
        self.batch_size = 1

    @property
    def total_len(self) -> int:
        return int(self._starts[-1])

    @property
    def dataset_statistics(self) -> dict[str, DatasetStatistics]:
        return {self.statistic_name: self.statistics}

    def save_statistics(self, path: str | os.PathLike) -> Path:
        """Write `dataset_statistics.json` (a directory gets the file inside it)."""
        return write_dataset_statistics(path, self.statistic_name, self.statistics)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch `epoch`'s order, starting after its first `skip` samples of this rank."""
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)

    def set_batch_size(self, batch_size: int) -> None:
        """The DataLoader's batch size, so each worker yields whole batches (see module doc)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        """Samples per rank per epoch."""
        return math.ceil(self.total_len / _rank_and_world()[1])

    def epoch_order(self, epoch: int, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
        """This rank's global sample indices for `epoch` (before `skip`)."""
        if rank is None or world_size is None:
            rank, world_size = _rank_and_world()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        n = self.total_len
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n, dtype=np.int64))
        per_rank = math.ceil(n / world_size)
        order = np.resize(order, per_rank * world_size)  # repeats from the start to fill the last round
        return order[rank::world_size]

    def get_item(self, index: int) -> Any:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.datasets[k][int(index - self._starts[k])]

    def __iter__(self) -> Iterator[Any]:
        order = self.epoch_order(self.epoch)[self.skip:]
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            b = self.batch_size
            blocks = range(worker.id, math.ceil(len(order) / b), worker.num_workers)
            order = np.concatenate([order[k * b:(k + 1) * b] for k in blocks]) if len(blocks) else order[:0]
        for index in order:
            yield self.get_item(int(index))
