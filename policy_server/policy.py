"""The `Policy` contract every engine behind the server implements.

    info() -> ServerInfo          what the server states about itself (vla.wire.server_info);
                                  the service adds its own limits (max_batch_size, max_message_bytes).
    prepare(obs) -> sample        the schema check and the policy's input transforms for one decoded
                                  observation. Raises PolicyError (INVALID_ARGUMENT naming the key)
                                  for bad input. Runs on the transport's threads (gRPC workers, the
                                  service's prep pool for HTTP/websocket), never on the event loop or
                                  the model thread, so per-request preprocessing runs in parallel with
                                  the model and a bad request never reaches a batch.
    infer_batch(samples) -> list  one float32 [chunk_length, action_dim] array per prepared sample, in
                                  order; a PolicyError in a slot fails only that request. Called with
                                  prepare()'s results only, by one thread at a time.
    warmup_observation() -> obs   a raw observation; warm-up runs it through prepare() and
                                  infer_batch() exactly as a request, before /readyz turns true.
    close()                       release what the policy holds (server shutdown).

`BasePolicy` gives the LIBERO defaults (input schema, a LIBERO-size warm-up observation); the
scripted policies and the model engine derive from it.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_server import schema
from vla.wire.errors import PolicyError
from vla.wire.server_info import InputSpec, ServerInfo


@runtime_checkable
class Policy(Protocol):
    def info(self) -> ServerInfo: ...

    def prepare(self, obs: Any) -> Any: ...

    def infer_batch(self, samples: list[Any]) -> list[np.ndarray | PolicyError]: ...

    def warmup_observation(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class BasePolicy:
    """Defaults shared by the scripted policies and the model engine: the LIBERO input schema."""

    input_specs: tuple[InputSpec, ...] = schema.LIBERO_INPUT_SPECS

    def info(self) -> ServerInfo:
        raise NotImplementedError

    def prepare(self, obs: Any) -> Any:
        return schema.validate_observation(obs)

    def infer_batch(self, samples: list[Any]) -> list[np.ndarray | PolicyError]:
        raise NotImplementedError

    def warmup_observation(self) -> dict[str, Any]:
        return schema.example_observation()

    def close(self) -> None:
        pass
