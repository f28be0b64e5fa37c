"""What a policy's reply must be, and which failures are the policy's and which the infrastructure's.

A reply must hold `actions`: a floating-point array [chunk, 7] (LIBERO's action space) of
finite numbers, with at least as many rows as the client executes per query (openpi's LIBERO
loop asserts the same), or as the server's ServerInfo declares (`chunk_length`) when that is
fewer: a server that says it answers one action at a time is held to that. A reply that breaks this, or a server that answers this episode's
observation with an error of its own (INTERNAL, INVALID_ARGUMENT: the model or its
preprocessing failed on it), is a *policy failure*: the episode ends there, counts in the
success rate's denominator and records its reason.

Infrastructure errors are only what says nothing about the policy: the simulator crashing or
raising, a lost or refused connection, a deadline passing, and the server saying it cannot take
the request now (UNAVAILABLE, RESOURCE_EXHAUSTED). Those are retried and recorded apart; one the
server marks not retryable (a request over its size limit) is recorded without a retry.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vla.wire.errors import ErrorCode, PolicyError

ACTION_DIM = 7
# Server codes that are the infrastructure's: the request did not reach a policy that could answer.
# UNAUTHENTICATED (a wrong token) is a setup error, never the policy's.
INFRA_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.DEADLINE_EXCEEDED,
                         ErrorCode.UNAUTHENTICATED})


class PolicyFailure(Exception):
    """The policy failed this episode: `kind` is a short category (summary counts), `detail` says what."""

    def __init__(self, kind: str, detail: str):
        self.kind, self.detail = kind, detail
        super().__init__(f"{kind}: {detail}")

    @property
    def reason(self) -> str:
        return str(self)


def is_infrastructure(exc: PolicyError) -> bool:
    return exc.code in INFRA_CODES


def from_server_error(exc: PolicyError) -> PolicyFailure:
    """A server error on this episode's observation that is the policy's (not in INFRA_CODES)."""
    return PolicyFailure(f"server_{exc.code.value}", exc.message[:500])


def check_actions(reply: Any, min_rows: int) -> np.ndarray:
    """The actions of a reply as float64 [chunk >= min_rows, 7], or PolicyFailure naming what is wrong."""
    if not isinstance(reply, dict) or "actions" not in reply:
        keys = sorted(map(str, reply)) if isinstance(reply, dict) else type(reply).__name__
        raise PolicyFailure("actions_missing", f"reply has no 'actions' (got {keys})")
    try:
        actions = np.asarray(reply["actions"])
    except (ValueError, TypeError) as exc:   # ragged lists
        raise PolicyFailure("actions_shape", f"'actions' is not an array: {exc}") from None
    if actions.dtype.kind != "f":
        raise PolicyFailure("actions_dtype", f"'actions' has dtype {actions.dtype}; expected a float dtype")
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or actions.shape[0] < 1:
        raise PolicyFailure("actions_shape",
                            f"'actions' has shape {list(actions.shape)}; expected [chunk>=1, {ACTION_DIM}]")
    if actions.shape[0] < min_rows:
        raise PolicyFailure("chunk_too_short", f"'actions' has {actions.shape[0]} rows; expected at least "
                                               f"{min_rows} (--chunk-size, or the server's declared chunk_length)")
    bad = ~np.isfinite(actions)
    if bad.any():
        rows = sorted({int(r) for r in np.nonzero(bad)[0]})
        raise PolicyFailure("actions_nonfinite", f"{int(bad.sum())} NaN/inf values in 'actions' (rows {rows[:10]})")
    return actions.astype(np.float64)
