"""The sim client's errors; both are `vla.errors.VLAError`s, which the CLI prints as one line."""
from __future__ import annotations

from vla.errors import VLAError


class SimClientError(VLAError, ValueError):
    """An evaluation that cannot run as asked: a bad argument, config, suite, task, results file or
    a server that declares something the client does not know. The message names which."""


class LiberoNotInstalled(VLAError, RuntimeError):
    """LIBERO, its assets or a headless renderer is missing; the message says how to install it."""
