"""What an episode talks to: a remote server through vla.wire, or an in-process stand-in.

Everything model-specific stays on the server. The client only decides, from the server's
`ServerInfo`, which observation layout to send (the simulator's keys, or openpi's LIBERO keys
for servers that ask for them or declare nothing, like openpi's own), which cameras to render,
and whether to rotate images (the server's declared `image_orientation`, never a guess here).
"""
from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np

from sim_client.errors import SimClientError
from vla.libero import CAMERA_KEYS, OPENPI_CAMERA_KEYS, OPENPI_STATE_KEY, PROPRIO_KEYS, libero_state, rotate_180
from vla.wire import protocol
from vla.wire.server_info import InputSpec, ServerInfo


class RequestBuilder:
    """Turns a LIBERO observation into the request the server declared it wants."""

    def __init__(self, info: ServerInfo, resize_size: int = 224):
        keys = info.input_keys
        sim = keys & set(protocol.SIM_KEYS)
        openpi = keys & set(protocol.OPENPI_KEYS)
        # A server that declares no inputs (openpi's) gets openpi's layout, pre-rotated as openpi's client does.
        self.layout = "sim" if sim and len(sim) >= len(openpi) else "openpi"
        orientation = info.image_orientation or (
            protocol.ORIENTATION_ROTATED_180 if self.layout == "openpi" else protocol.ORIENTATION_AS_RENDERED)
        if orientation not in protocol.ORIENTATIONS:
            raise SimClientError(f"server declares image_orientation {orientation!r}; known: {protocol.ORIENTATIONS}")
        self.rotate = orientation == protocol.ORIENTATION_ROTATED_180
        self.resize_size = resize_size
        # The reply length the server declares (0: none, as openpi's); sim_client.contract's minimum.
        self.chunk_length = int(info.chunk_length or 0)
        self.sends_seed = protocol.SEED_KEY in keys   # only to servers that declare the optional input
        if self.layout == "sim":  # exactly the cameras declared: a state-only server (the expert) gets none
            self.cameras = tuple(k for k in CAMERA_KEYS if k in keys)
        else:
            declared = [k for k in CAMERA_KEYS if OPENPI_CAMERA_KEYS[k] in keys]
            self.cameras = tuple(declared or CAMERA_KEYS)

    def _image(self, img: np.ndarray) -> np.ndarray:
        return rotate_180(img) if self.rotate else np.ascontiguousarray(img)

    def build(self, obs: dict[str, Any], prompt: str, seed: int | None = None) -> dict[str, Any]:
        if self.layout == "sim":
            req = {k: self._image(obs[k]) for k in self.cameras}
            for k in PROPRIO_KEYS:
                req[k] = np.asarray(obs[k], dtype=np.float64)
        else:
            req = {}
            for src in self.cameras:
                req[OPENPI_CAMERA_KEYS[src]] = resize_with_pad(self._image(obs[src]), self.resize_size)
            req[OPENPI_STATE_KEY] = libero_state(obs)
        req[protocol.PROMPT_KEY] = prompt
        if seed is not None and self.sends_seed:
            req[protocol.SEED_KEY] = int(seed)
        return req


def request_seed(seed: int, suite: str, task_id: int, trial: int, step: int) -> int:
    """The noise seed of one query: a function of the episode and the step only, so a rerun (any worker,
    any shard, resumed or not) sends the same seeds and gets the same chunks."""
    return zlib.crc32(f"{seed}/{suite}/{task_id}/{trial}/{step}".encode())


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Aspect-preserving bilinear resize into a size×size black canvas (openpi's image_tools)."""
    from PIL import Image

    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    ratio = max(w / size, h / size)
    nh, nw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), resample=Image.BILINEAR))
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


class RemotePolicy:
    """A policy server at a grpc:// ws:// or http:// URL (bearer token from POLICY_SERVER_TOKEN)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, retries: int = 8, ready_timeout_s: float = 120.0):
        from vla.wire import connect

        self.url = url
        self.client = connect(url, timeout_s=timeout_s, retries=retries)
        self.ready_timeout_s = ready_timeout_s
        self._info: ServerInfo | None = None

    def info(self) -> ServerInfo:
        if self._info is None:
            self.client.wait_ready(timeout_s=self.ready_timeout_s)
            self._info = self.client.server_info()
        return self._info

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.client.infer(request)

    def close(self) -> None:
        self.client.close()


class LocalPolicy:
    """In-process stand-in with the server's shape of replies (tests, and runs without sockets)."""

    model = "local"

    def __init__(self, chunk_length: int = 10, sequences: dict[str, list] | None = None):
        self.chunk_length = chunk_length
        self.sequences = {k: np.asarray(v, np.float32) for k, v in (sequences or {}).items()}
        self.requests: list[dict[str, Any]] = []

    def info(self) -> ServerInfo:
        return ServerInfo(model=self.model, chunk_length=self.chunk_length, action_dim=7,
                          inputs=tuple(InputSpec(k) for k in (*protocol.SIM_KEYS, protocol.PROMPT_KEY)),
                          image_orientation=protocol.ORIENTATION_AS_RENDERED, model_version="local-1",
                          scripted="replay" if self.sequences else "noop")

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        noop = np.tile(np.array([0.0] * 6 + [-1.0], np.float32), (self.chunk_length, 1))
        seq = self.sequences.get(request.get("replay_key", "")) if self.sequences else None
        if seq is None and self.sequences:
            seq = self.sequences.get(request.get(protocol.PROMPT_KEY, ""), self.sequences.get("*"))
        if seq is not None:
            step = int(request.get("replay_step", 0))
            chunk = seq[step:step + self.chunk_length]
            noop[:len(chunk)] = chunk
            if len(chunk) < self.chunk_length:
                noop[len(chunk):, -1] = seq[-1, -1]
        return {"actions": noop, "model_version": "local-1", "server_timing": {"infer_ms": 0.0}}

    def close(self) -> None:
        pass


def make_policy(spec: Any, **kwargs: Any):
    """A URL string → RemotePolicy; a zero-argument callable (picklable, for spawned workers) → its result."""
    if isinstance(spec, str):
        return RemotePolicy(spec, **kwargs)
    if callable(spec):
        return spec()
    raise TypeError(f"policy spec must be a server URL or a factory, got {type(spec).__name__}")


def timed_infer(policy, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    reply = policy.infer(request)
    return reply, (time.perf_counter() - t0) * 1000.0
