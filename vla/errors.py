"""`VLAError`: the base of every error this project raises on purpose.

A `VLAError` means the input, a file or a peer is wrong (a config key, a dataset file, a work
dir, a checkpoint, a server's reply), and its message names what and where. The command-line
entry points catch it (and the wire's `PolicyError`, itself a `VLAError`) and print one line;
any other exception is a bug and shows its traceback.

Each domain error also keeps the builtin base it has always had (`ValueError` for bad input,
`RuntimeError` for a failed step), so `except ValueError` in callers keeps working:

    ConfigError               vla.config            ValueError
    JSONFileError             vla.io                ValueError
    StatisticsError           vla.normalize         ValueError
    DatasetError              vla.data              ValueError
    TransformError            vla.data              ValueError (a DatasetError; training and eval transforms)
    RunInfoError              vla.run_info          ValueError
    CheckpointError           vla.checkpoint        RuntimeError
    CheckpointNotFoundError   vla.models.loading    FileNotFoundError
    CheckpointFileError       vla.models.loading    ValueError
    CheckpointMismatchError   vla.models.loading    RuntimeError
    PolicyError               vla.wire              (a wire error code and a client-safe message)
    EngineError               policy_server         ValueError
    WarmupError               policy_server         RuntimeError
    SimClientError            sim_client            ValueError
    ExpertUnsupported         sim_client.expert_goals  ValueError (a SimClientError)
    ExpertFailed              sim_client.record     RuntimeError
    LiberoNotInstalled        sim_client            RuntimeError
    DemoError                 demo                  RuntimeError
    DownloadError             scripts/download_libero.py   RuntimeError
"""
from __future__ import annotations

import errno
import os
import sys
import traceback


class VLAError(Exception):
    """An expected failure with a message that says what was wrong and where (no traceback needed)."""


# What to do about the OS errors a user can cause (a full disk, a read-only or foreign directory).
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space there or write somewhere else",
    errno.EDQUOT: "free some of your quota or write somewhere else",
    errno.EROFS: "the file system is read-only: choose a writable directory",
    errno.EACCES: "permission denied: choose a directory you may write, or fix its owner/mode",
    errno.EPERM: "operation not permitted: choose a directory you may write, or fix its owner/mode",
    errno.ENOENT: "check the path",
    errno.EISDIR: "a directory is where a file was expected: check the path",
    errno.ENOTDIR: "a file is where a directory was expected: check the path",
}

# What a command-line entry point reports in one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (VLAError, OSError)


def debug_requested(flag: bool = False) -> bool:
    """Tracebacks for expected errors too: `--debug` or LOG_LEVEL=DEBUG."""
    return flag or os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"


def describe(exc: BaseException) -> str:
    """One line for an expected error: a VLAError's own message; an OSError as file, reason, remedy."""
    if isinstance(exc, VLAError) or not isinstance(exc, OSError):
        return str(exc)
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    hint = OS_ERROR_HINTS.get(exc.errno or -1)
    return f"{where + ': ' if where else ''}{reason}" + (f"; {hint}" if hint else "")


def cli_error(prog: str, exc: BaseException, *, debug: bool = False) -> str:
    """The line a CLI prints for `exc` (`prog: what and where; what to do`); with `--debug` or
    LOG_LEVEL=DEBUG the traceback is printed to stderr first."""
    if debug_requested(debug):
        traceback.print_exception(exc, file=sys.stderr)
    return f"{prog}: {describe(exc)}"
