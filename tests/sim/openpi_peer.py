"""openpi's own websocket server (the `openpi-server` package from PyPI) serving a scripted policy.

    python -m tests.sim.openpi_peer --port P --mode replay --replay FILE --replan 10 [--log FILE]

The policy is an `openpi_client.base_policy.BasePolicy`, as a real openpi policy is, and the
server sends openpi's metadata frame (no `ready_path`, no `inputs`): the client sees what it
sees from openpi's `serve_policy.py`. Modes:

replay     plays the JSON sequence back blind, `--replan` actions further on each call (openpi's
           client executes `replan_steps` actions of each chunk); one episode at a time.
nan        replay, but the second reply holds NaN actions.
shape      replies with actions of shape [chunk, 3].
dtype      replies with actions as strings.
missing    replies with no `actions` key.
short      replies with a chunk shorter than the client's replanning chunk.
raise      the policy raises: openpi's server sends the traceback as a text frame and closes.

`--log` appends one JSON line per request (keys, shapes, dtypes) for the test to inspect.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from openpi_client import base_policy
from openpi_server import WebsocketPolicyServer


class ScriptedOpenpiPolicy(base_policy.BasePolicy):
    def __init__(self, mode: str, actions: np.ndarray, replan: int, chunk: int, log: str | None):
        self.mode, self.actions, self.replan, self.chunk, self.log = mode, actions, replan, chunk, log
        self.calls = 0

    def _record(self, obs: dict) -> None:
        if self.log:
            entry = {k: ([list(v.shape), v.dtype.str] if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
            with open(self.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def infer(self, obs: dict) -> dict:
        self._record(obs)
        call, self.calls = self.calls, self.calls + 1
        start = call * self.replan
        chunk = self.actions[start:start + self.chunk]
        if len(chunk) < self.chunk:   # past the end: hold still with the last gripper command
            hold = np.zeros((self.chunk - len(chunk), 7), np.float32)
            hold[:, -1] = self.actions[-1, -1]
            chunk = np.concatenate([chunk, hold])
        if self.mode == "nan" and call == 1:
            chunk = chunk.copy()
            chunk[2, 0] = np.nan
        elif self.mode == "shape":
            chunk = chunk[:, :3]
        elif self.mode == "dtype":
            chunk = np.array([["x"] * 7] * self.chunk)
        elif self.mode == "missing":
            return {"action": chunk}
        elif self.mode == "short":
            chunk = chunk[: max(1, self.replan - 1)]
        elif self.mode == "raise":
            raise RuntimeError("scripted policy failure")
        return {"actions": np.ascontiguousarray(chunk, dtype=np.float32)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", default="replay")
    p.add_argument("--replay", required=True, help="JSON with an `actions` list of 7-vectors")
    p.add_argument("--replan", type=int, default=5)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--log")
    args = p.parse_args()
    with open(args.replay) as f:
        actions = np.asarray(json.load(f)["actions"], np.float32)
    policy = ScriptedOpenpiPolicy(args.mode, actions, args.replan, args.chunk, args.log)
    WebsocketPolicyServer(policy, host="127.0.0.1", port=args.port, metadata={"peer": "openpi-server"}).serve_forever()


if __name__ == "__main__":
    main()
