"""The one error type the data layer raises for bad datasets and bad samples."""
from __future__ import annotations

from vla.errors import VLAError


class DatasetError(VLAError, ValueError):
    """A dataset that cannot be read as it is; the message names the file and the episode."""
