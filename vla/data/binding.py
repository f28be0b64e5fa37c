"""Statistics binding: transforms that normalise get the run's statistics once, at construction.

A transform that needs the dataset statistics (or the model's sizes) has a method

    bind(statistics: DatasetStatistics, *, state_dim: int | None = None) -> None

and raises TransformError if it is called before being bound. Its config stays as FluxVLA's LIBERO guide
writes it (no statistics in it): the owner of the pipeline binds the statistics it computed or
loaded, once, before the first sample -

    training  `DistributedRepeatingDataset` computes (or is given) the statistics and binds them
              into every wrapped dataset's transforms (`ParquetDataset.bind_statistics`)
    serving   the policy server's engine loads `dataset_statistics.json` and binds them into the
              eval transforms together with the model's `state_dim`

so no sample carries statistics and no transform looks them up per sample.
"""
from __future__ import annotations

from typing import Any, Iterable

from vla.normalize import DatasetStatistics


def bind_statistics(transforms: Iterable[Any], statistics: DatasetStatistics, *,
                    state_dim: int | None = None) -> None:
    """Call `bind` on every transform that has one (the others need no statistics)."""
    if not isinstance(statistics, DatasetStatistics):
        raise TypeError(f"statistics must be a DatasetStatistics, got {type(statistics).__name__}")
    for t in transforms:
        bind = getattr(t, "bind", None)
        if bind is not None:
            bind(statistics=statistics, state_dim=state_dim)


def bind_model(transforms: Iterable[Any], model: Any) -> None:
    """Give the transforms what only the model knows: the vision tokens per image (GR00T's Eagle),
    so the guide's configs need not write `tokens_per_image`. Training and serving both call it."""
    tokens = getattr(model, "tokens_per_image", None)
    if tokens is None:
        return
    for t in transforms:
        if hasattr(t, "bind_model"):
            t.bind_model(tokens_per_image=tokens)


def dataset_transforms(dataset: Any) -> list[Any]:
    """The transforms of a training dataset and of the datasets it wraps (`datasets`)."""
    return [t for part in getattr(dataset, "datasets", [dataset]) for t in getattr(part, "transforms", [])]
