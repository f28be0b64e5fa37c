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
    CheckpointError           vla.checkpoint        RuntimeError
    CheckpointNotFoundError   vla.models.loading    FileNotFoundError
    CheckpointFileError       vla.models.loading    ValueError
    CheckpointMismatchError   vla.models.loading    RuntimeError
    PolicyError               vla.wire              (a wire error code and a client-safe message)
    EvalTransformError        eval transforms       ValueError
    EngineError               policy_server         ValueError
    SimClientError            sim_client            ValueError
    ExpertUnsupported         sim_client.expert     ValueError (a SimClientError)
    ExpertFailed              sim_client.record     RuntimeError
    LiberoNotInstalled        sim_client            RuntimeError
    DemoError                 demo                  RuntimeError
    DownloadError             scripts/download_libero.py   RuntimeError
"""
from __future__ import annotations


class VLAError(Exception):
    """An expected failure with a message that says what was wrong and where (no traceback needed)."""
