"""`DistributedRepeatingDataset`: a concatenation, a rank-aware resumable epoch order, and statistics.

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
from vla.data.transforms import ProcessPrompts, ProcessPromptsWithImage
from vla.normalize import DatasetStatistics, load_statistics
from vla.run_info import RunInfo


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class Concatenation:
    """Several map-style datasets as one index space: sample i of dataset k is `starts[k] + i`."""

    def __init__(self, datasets: Sequence[Any]):
        if not datasets or not all(hasattr(d, "__getitem__") and hasattr(d, "__len__") for d in datasets):
            raise ValueError("datasets must be one dataset (or a list) with __getitem__ and __len__")
        self.datasets = list(datasets)
        self.starts = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).astype(np.int64)
        if len(self) == 0:
            raise ValueError("the wrapped datasets hold no samples")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> Any:
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.datasets[k][int(index - self.starts[k])]


class RankOrder:
    """The resumable, rank-aware epoch order of `size` samples (see the module doc)."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 42):
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.epoch = 0
        self.skip = 0
        self.batch_size = 1

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)

    def set_batch_size(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def per_rank(self, world_size: int) -> int:
        return math.ceil(self.size / world_size)

    def epoch_order(self, epoch: int, rank: int, world_size: int) -> np.ndarray:
        """This rank's sample indices for `epoch` (before `skip`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.size) if self.shuffle
                 else np.arange(self.size, dtype=np.int64))
        order = np.resize(order, self.per_rank(world_size) * world_size)  # repeats from the start
        return order[rank::world_size]

    def indices(self, rank: int, world_size: int, worker_id: int = 0, num_workers: int = 1) -> np.ndarray:
        """What one DataLoader worker of this rank yields this epoch: whole batches in turn, after `skip`."""
        order = self.epoch_order(self.epoch, rank, world_size)[self.skip:]
        if num_workers > 1:
            b = self.batch_size
            blocks = range(worker_id, math.ceil(len(order) / b), num_workers)
            order = np.concatenate([order[k * b:(k + 1) * b] for k in blocks]) if len(blocks) else order[:0]
        return order


@register
class DistributedRepeatingDataset(IterableDataset):
    """The training dataset: a concatenation of `datasets`, a resumable rank-aware order over it,
    and the run's statistics under `statistic_name`, bound into the wrapped datasets' transforms.

    The statistics are computed from the datasets' LeRobot readers, or given as
    `dataset_statistics` (a path to a statistics file or a DatasetStatistics): the runner passes
    the ones rank 0 wrote, or the ones a resumed run already has.
    """

    def __init__(self, datasets: Any, statistic_keys: Sequence[str], name_mappings: Mapping[str, Any] | None = None,
                 shuffle: bool = True, seed: int = 42, statistic_name: str = "private",
                 dataset_statistics: str | os.PathLike | DatasetStatistics | None = None,
                 action_norm_mask: Sequence[bool] | None = None):
        items = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        self.concat = Concatenation([build(d) if isinstance(d, dict) else d for d in items])
        self.statistic_keys = list(statistic_keys)
        self.name_mappings = dict(name_mappings or {})
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
                d.bind_statistics(self.statistics)
        self.order = RankOrder(len(self.concat), shuffle, seed)

    @property
    def datasets(self) -> list[Any]:
        return self.concat.datasets

    @property
    def total_len(self) -> int:
        return len(self.concat)

    @property
    def dataset_statistics(self) -> dict[str, DatasetStatistics]:
        return {self.statistic_name: self.statistics}

    def save_statistics(self, path: str | os.PathLike) -> Path:
        """Write `dataset_statistics.json` (a directory gets the file inside it)."""
        return write_dataset_statistics(path, self.statistic_name, self.statistics)

    def run_info(self) -> RunInfo:
        """What the work dir records for the server (vla/run_info.py): the statistic name and the
        first wrapped dataset's prompt transform settings."""
        prompt = next((t.settings() for d in self.datasets for t in getattr(d, "transforms", ())
                       if isinstance(t, (ProcessPrompts, ProcessPromptsWithImage))), None)
        return RunInfo(statistic_name=self.statistic_name, prompt=prompt)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch `epoch`'s order, starting after its first `skip` samples of this rank."""
        self.order.set_epoch(epoch, skip)

    def set_batch_size(self, batch_size: int) -> None:
        """The DataLoader's batch size, so each worker yields whole batches (see module doc)."""
        self.order.set_batch_size(batch_size)

    def __len__(self) -> int:
        """Samples per rank per epoch."""
        return self.order.per_rank(_rank_and_world()[1])

    def epoch_order(self, epoch: int, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
        """This rank's global sample indices for `epoch` (before `skip`)."""
        if rank is None or world_size is None:
            rank, world_size = _rank_and_world()
        return self.order.epoch_order(epoch, rank, world_size)

    def get_item(self, index: int) -> Any:
        return self.concat[index]

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        rank, world = _rank_and_world()
        ids = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for index in self.order.indices(rank, world, *ids):
            yield self.concat[int(index)]
