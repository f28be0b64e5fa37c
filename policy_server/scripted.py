"""Scripted policies: no model, fixed behaviour, for sim-client and fault tests.

noop    every request gets `[0]*6 + [-1]` repeated `chunk_length` times (no motion, gripper open).
replay  plays back recorded action sequences. The file (`--replay-file`) is JSON mapping a
        sequence name to a list of 7-vectors, `{"<prompt>": [[...7], ...], "*": [...]}`,
        or a .npy array [T, 7] (stored under "*"). A request picks its sequence by its
        `replay_key` string if present, else by its `prompt`, else "*"; and its position by
        `replay_step` (int, default 0): the reply is actions[step : step + chunk_length],
        padded past the end with no motion and the last gripper command. Stateless, so any
        number of clients, transports and batches can replay at once.
fault   noop actions, but a request's `fault` string picks an error: a taxonomy code
        (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, `INTERNAL`, ...) fails that
        request alone with that code; `CRASH` raises inside the batch (a server bug: every
        request in the batch gets INTERNAL, the traceback stays in the server log). A numeric
        `sleep_ms` makes the batch take that long (deadline and drain tests).
All take `compute_ms`: a sleep per batch that stands in for model time. They follow the server's
`Policy` contract (policy_server/policy.py): `prepare` is the schema check, which passes the extra
keys above through to `infer_batch`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from policy_server.policy import BasePolicy
from vla.config import ConfigError
from vla.io import read_json
from vla.wire import protocol
from vla.wire.errors import ErrorCode, PolicyError
from vla.wire.server_info import ServerInfo

ACTION_DIM = 7
NOOP_ACTION = np.array([0.0] * 6 + [-1.0], dtype=np.float32)


def _int_field(obs: dict[str, Any], key: str, default: int) -> int:
    value = obs.get(key, default)
    try:
        if isinstance(value, np.ndarray):
            if value.size != 1 or value.dtype.kind not in "iuf":
                raise ValueError
            value = value.reshape(()).item()
        if isinstance(value, (float, np.floating)) and float(value) != int(value):
            raise ValueError
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key!r}: expected an integer, got {value!r:.60}") from None
    if out < 0:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key!r}: must be >= 0, got {out}")
    return out


class ScriptedPolicy(BasePolicy):
    name = "scripted"

    def __init__(self, chunk_length: int = 10, compute_ms: float = 0.0, **_: Any):
        if chunk_length < 1:
            raise ConfigError(f"chunk_length must be >= 1, got {chunk_length}")
        self.chunk_length = int(chunk_length)
        self.compute_ms = float(compute_ms)

    def info(self) -> ServerInfo:
        return ServerInfo(model=f"scripted:{self.name}", checkpoint="", chunk_length=self.chunk_length,
                          action_dim=ACTION_DIM, inputs=self.input_specs,
                          image_orientation=protocol.ORIENTATION_AS_RENDERED,
                          model_version=f"scripted-{self.name}-1", scripted=self.name)

    def _sleep(self, extra_ms: float = 0.0) -> None:
        total = self.compute_ms + extra_ms
        if total > 0:
            time.sleep(total / 1000.0)

    def _noop_chunk(self) -> np.ndarray:
        return np.tile(NOOP_ACTION, (self.chunk_length, 1))

    def infer_batch(self, samples: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]:
        self._sleep()
        return [self._noop_chunk() for _ in samples]


class NoopPolicy(ScriptedPolicy):
    name = "noop"


class ReplayPolicy(ScriptedPolicy):
    name = "replay"

    def __init__(self, replay_file: str | None = None, sequences: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if sequences is None:
            if not replay_file:
                raise ConfigError("the replay policy needs --replay-file (JSON {prompt: [[7 floats], ...]} or .npy [T, 7])")
            sequences = self.load(replay_file)
        self.sequences = {str(k): self._check(str(k), v) for k, v in sequences.items()}
        if not self.sequences:
            raise ConfigError("the replay policy got no sequences")

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"replay file {path} not found")
        if path.suffix == ".npy":
            return {"*": np.load(path, allow_pickle=False)}
        data = read_json(path, error=ConfigError)
        if isinstance(data, list):
            data = {"*": data}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object mapping a prompt to a list of 7-vectors")
        return data

    @staticmethod
    def _check(name: str, seq: Any) -> np.ndarray:
        arr = np.asarray(seq, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != ACTION_DIM or len(arr) == 0:
            raise ConfigError(f"replay sequence {name!r}: expected shape [T>0, {ACTION_DIM}], got {list(arr.shape)}")
        if not np.isfinite(arr).all():
            raise ConfigError(f"replay sequence {name!r} has NaN or infinite values")
        return arr

    def info(self) -> ServerInfo:
        return super().info().replace(
            replay_sequences={k: len(v) for k, v in sorted(self.sequences.items())[:100]})

    def warmup_observation(self) -> dict[str, Any]:
        """A LIBERO-size observation whose prompt names a recorded sequence (warm-up runs the real
        request path, and a replay server without a '*' default answers only prompts it knows)."""
        obs = super().warmup_observation()
        if "*" not in self.sequences:
            obs[protocol.PROMPT_KEY] = sorted(self.sequences)[0]
        return obs

    def chunk_for(self, obs: dict[str, Any]) -> np.ndarray:
        key = obs.get("replay_key")
        if key is not None and not isinstance(key, str):
            raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"'replay_key': expected a string, got {type(key).__name__}")
        name = key if key is not None else obs.get(protocol.PROMPT_KEY, "")
        seq = self.sequences.get(name)
        if seq is None:
            seq = self.sequences.get("*")
        if seq is None:
            known = sorted(self.sequences)[:5]
            raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                              f"no replay sequence for {name!r} and no '*' default; known: {known}")
        step = _int_field(obs, "replay_step", 0)
        chunk = seq[step:step + self.chunk_length]
        if len(chunk) < self.chunk_length:
            hold = np.zeros(ACTION_DIM, dtype=np.float32)
            hold[-1] = seq[-1, -1]
            chunk = np.concatenate([chunk, np.tile(hold, (self.chunk_length - len(chunk), 1))])
        return chunk.copy()

    def infer_batch(self, samples: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]:
        self._sleep()
        out: list[np.ndarray | PolicyError] = []
        for obs in samples:
            try:
                out.append(self.chunk_for(obs))
            except PolicyError as exc:
                out.append(exc)
        return out


class FaultPolicy(ScriptedPolicy):
    name = "fault"

    def infer_batch(self, samples: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]:
        sleep_ms = max((_int_field(o, "sleep_ms", 0) for o in samples), default=0)
        self._sleep(sleep_ms)
        out: list[np.ndarray | PolicyError] = []
        for obs in samples:
            fault = obs.get("fault")
            if fault == "CRASH":
                raise RuntimeError("scripted crash requested by a client (fault=CRASH)")
            if isinstance(fault, str) and fault in ErrorCode.__members__:
                out.append(PolicyError(fault, f"scripted {fault} requested by the client"))
            else:
                out.append(self._noop_chunk())
        return out


SCRIPTED = {"noop": NoopPolicy, "replay": ReplayPolicy, "fault": FaultPolicy}


def make_scripted(name: str, **kwargs: Any) -> ScriptedPolicy:
    if name not in SCRIPTED:
        raise ConfigError(f"unknown scripted policy {name!r}; choose from {sorted(SCRIPTED)}")
    return SCRIPTED[name](**kwargs)
