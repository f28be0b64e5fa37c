"""`ServerInfo`: what a policy server states about itself (torch-free).

One dataclass for every side of the wire: a policy's `info()` returns it, the service adds its
limits, the transports send `to_dict()` (HTTP `/v1/info` as JSON, the websocket's first frame as
msgpack) or `to_proto()` (gRPC `ServerInfo`), and every client reads it back with `from_dict` /
`from_proto`. The wire forms are unchanged: the seven fields of the proto message travel as
fields, everything else in its `metadata_json` object, and a dict holds all of them at the top.

Fields that a server does not state are `None` and left out of the wire forms (a scripted policy
has no `statistic_name`). Keys this class does not know (a peer such as openpi's server sends
its own metadata) are kept in `extra`, so nothing a server says is lost on the way.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class InputSpec:
    """One observation key a server accepts: dtype (`uint8`, `float`, `str`), shape (-1: any size)."""

    key: str
    dtype: str = ""
    shape: tuple[int, ...] = ()
    required: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dtype": self.dtype, "shape": list(self.shape), "required": self.required,
                "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InputSpec":
        return cls(key=str(d["key"]), dtype=str(d.get("dtype") or ""), shape=tuple(int(s) for s in d.get("shape") or ()),
                   required=bool(d.get("required", True)), description=str(d.get("description") or ""))


# The proto message's own fields; every other field travels in its metadata_json.
_PROTO_FIELDS = ("model", "checkpoint", "chunk_length", "action_dim", "inputs", "image_orientation", "model_version")


@dataclass(frozen=True)
class ServerInfo:
    """A server's self-description (the ServerInfo of the wire contract, vla/wire/protocol.py).

    model, checkpoint, model_version   what is served (`model_version` is echoed in every reply)
    chunk_length, action_dim           every reply's `actions` is float32 [chunk_length, action_dim]
    inputs                             the observation keys it accepts (empty: it declares none)
    image_orientation                  protocol.ORIENTATION_*; "" when the server declares none
    max_batch_size, max_message_bytes  the service's limits (set by the service, not the policy)
    ready_path                         where its readiness is (set by the service; openpi's has none)
    statistic_name .. weights_loaded   a model engine's facts about the work dir it serves
    scripted, replay_sequences         a scripted policy's name and replay sequence lengths
    extra                              keys a peer sent that this class does not know
    """

    model: str = ""
    checkpoint: str = ""
    chunk_length: int = 0
    action_dim: int = 0
    inputs: tuple[InputSpec, ...] = ()
    image_orientation: str = ""
    model_version: str = ""
    max_batch_size: int | None = None
    max_message_bytes: int | None = None
    ready_path: str | None = None      # the HTTP readiness path (/readyz), for websocket clients
    statistic_name: str | None = None
    work_dir: str | None = None
    state_dim: int | None = None
    model_action_dim: int | None = None
    gripper_convention: str | None = None
    weights_loaded: int | None = None
    scripted: str | None = None
    replay_sequences: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "ServerInfo":
        return dataclasses.replace(self, **changes)

    @property
    def input_keys(self) -> set[str]:
        return {spec.key for spec in self.inputs}

    def to_dict(self) -> dict[str, Any]:
        """The JSON / msgpack form: every stated field at the top level, `extra` merged in."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in _PROTO_FIELDS:
                out[f.name] = [s.to_dict() for s in value] if f.name == "inputs" else value
            elif value is not None:
                out[f.name] = dict(value) if isinstance(value, dict) else value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ServerInfo":
        """Read any server's info dict; missing fields keep their defaults, unknown keys go to `extra`."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        kwargs["inputs"] = tuple(InputSpec.from_dict(s) for s in d.get("inputs") or ())
        for key in ("model", "checkpoint", "image_orientation", "model_version"):
            kwargs[key] = str(d.get(key) or "")
        for key in ("chunk_length", "action_dim"):
            kwargs[key] = int(d.get(key) or 0)
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_proto(self) -> Any:
        """The gRPC `ServerInfoResponse`."""
        from vla.wire._gen import policy_pb2

        meta = {k: v for k, v in self.to_dict().items() if k not in _PROTO_FIELDS}
        return policy_pb2.ServerInfoResponse(
            model=self.model, checkpoint=self.checkpoint, chunk_length=self.chunk_length,
            action_dim=self.action_dim, image_orientation=self.image_orientation, model_version=self.model_version,
            inputs=[policy_pb2.InputSpec(key=s.key, dtype=s.dtype, shape=list(s.shape), required=s.required,
                                         description=s.description) for s in self.inputs],
            metadata_json=json.dumps(meta))

    @classmethod
    def from_proto(cls, msg: Any) -> "ServerInfo":
        d: dict[str, Any] = json.loads(msg.metadata_json) if msg.metadata_json else {}
        d.update(model=msg.model, checkpoint=msg.checkpoint, chunk_length=msg.chunk_length,
                 action_dim=msg.action_dim, image_orientation=msg.image_orientation,
                 model_version=msg.model_version,
                 inputs=[{"key": s.key, "dtype": s.dtype, "shape": list(s.shape), "required": s.required,
                          "description": s.description} for s in msg.inputs])
        return cls.from_dict(d)
