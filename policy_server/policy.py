"""The `Policy` protocol every engine behind the server implements.

A policy answers two calls, both from the single batcher worker thread (never concurrently):

    info() -> dict           the ServerInfo (DESIGN §3): model, checkpoint, chunk_length,
                             action_dim, inputs (InputSpec dicts), image_orientation,
                             model_version, plus any extra JSON-able keys.
    infer_batch(observations: list[dict]) -> list[np.ndarray | PolicyError]
                             one float32 [chunk, action_dim] array per observation, in order;
                             a PolicyError in a slot fails only that request.

`validate(obs)` runs on the transport's thread before the request is queued, so a bad
request never reaches (or fails) a batch; it returns what to enqueue (the engine returns the
already-transformed sample, so per-request preprocessing runs in parallel with the model).
A policy with `prepare_in_thread = True` has validate() run off the asyncio event loop.
`warmup_observation()` gives the batcher something to run before /readyz turns true.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_server import schema
from vla.wire.errors import PolicyError


@runtime_checkable
class Policy(Protocol):
    def info(self) -> dict[str, Any]: ...

    def infer_batch(self, observations: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]: ...


class BasePolicy:
    """Defaults shared by the scripted policies and the model engine: LIBERO input schema."""

    input_specs: list[dict[str, Any]] = schema.LIBERO_INPUT_SPECS

    def info(self) -> dict[str, Any]:
        raise NotImplementedError

    def infer_batch(self, observations: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]:
        raise NotImplementedError

    def validate(self, obs: dict[str, Any]) -> dict[str, Any]:
        return schema.validate_observation(obs)

    def warmup_observation(self) -> dict[str, Any]:
        return schema.example_observation()

    def close(self) -> None:
        pass


def validate(policy: Any, obs: dict[str, Any]) -> dict[str, Any]:
    fn = getattr(policy, "validate", None)
    return fn(obs) if fn is not None else obs
