"""The errors the data layer raises, and the required-key helper every transform uses.

`DatasetError` is a dataset that cannot be read as it is; `TransformError` (a DatasetError) is a
sample a training transform, or an observation an eval transform, cannot process. The policy
server answers a TransformError with INVALID_ARGUMENT; the trainer stops with the message.
"""
from __future__ import annotations

from typing import Any, Mapping

from vla.errors import VLAError


class DatasetError(VLAError, ValueError):
    """A dataset that cannot be read as it is; the message names the file and the episode."""


class TransformError(DatasetError):
    """A sample (training) or observation (serving) a transform cannot process; the message
    names the transform and the key."""


def require(data: Mapping[str, Any], key: str, who: str) -> Any:
    """`data[key]`, or a TransformError naming `who` wanted it and what the sample has."""
    if key not in data:
        raise TransformError(f"{who}: sample has no {key!r}; it has {sorted(data)}")
    return data[key]
