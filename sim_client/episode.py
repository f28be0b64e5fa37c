"""One LIBERO episode as openpi's examples/libero/main.py runs it.

seed once per task env, one reset per trial in trial order (LiberoEnv.reset keeps openpi's RNG
sequence) → the trial's fixed initial state → `num_steps_wait` no-op steps (objects settle)
→ query the policy with the raw observation, execute `actions_per_query` actions of the reply, query
again … until the env reports done (success) or the suite's step budget runs out (failure).
A reply that breaks the action contract (sim_client.contract) ends the episode as a failure
with its reason; infrastructure errors propagate to the worker, which retries the episode.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sim_client.contract import PolicyFailure, check_actions, from_server_error, is_infrastructure
from sim_client.env import NOOP_ACTION, LiberoEnv
from sim_client.policy import RequestBuilder, request_seed, timed_infer
from vla.libero import CAMERA_KEYS, rotate_180
from vla.wire.errors import PolicyError


@dataclass
class EpisodeSpec:
    suite: str
    task_id: int
    trial: int
    seed: int = 7
    max_steps: int = 520
    num_steps_wait: int = 10
    actions_per_query: int = 10      # the config's `eval_chunk_size`

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.suite, self.task_id, self.trial)


@dataclass
class EpisodeOutcome:
    success: bool
    steps: int                       # policy-controlled steps executed (the warm-up not counted)
    queries: int
    latency_ms: float                # mean round trip of the policy queries
    model_version: str
    env_steps_per_s: float
    actions: np.ndarray              # every action executed after the warm-up, for replays and videos
    failure: str | None = None       # why the policy failed early (a reply breaking the contract), else None
    frames: list[np.ndarray] = field(default_factory=list)


def side_by_side(obs: dict[str, Any], keys=CAMERA_KEYS) -> np.ndarray:
    """Video frame: the cameras next to each other, turned upright (LIBERO renders upside down)."""
    return np.concatenate([rotate_180(obs[k]) for k in keys if k in obs], axis=1)


def run_episode(env: LiberoEnv, policy, builder: RequestBuilder, spec: EpisodeSpec, prompt: str,
                init_state: np.ndarray, *, record_video: bool = False,
                on_step: Callable[[int, dict[str, Any]], None] | None = None) -> EpisodeOutcome:
    """Run one trial. `record_video` renders both cameras every step (the frames a video needs)."""
    every = True if record_video else False
    query_cams = builder.cameras
    frames: list[np.ndarray] = []
    wait = spec.num_steps_wait

    # The warm-up renders nothing, except the last step, whose observation the first query sends.
    obs = env.reset(spec.seed, init_state, trial=spec.trial, render=every or (query_cams if wait == 0 else False))
    for t in range(wait):
        obs, _ = env.step(NOOP_ACTION, render=every or (query_cams if t == wait - 1 else False))
        if record_video:
            frames.append(side_by_side(obs))

    plan: collections.deque = collections.deque()
    # Rows a reply must have: the replanning chunk, or less if the server declares shorter chunks.
    min_rows = min(spec.actions_per_query, builder.chunk_length) if builder.chunk_length else spec.actions_per_query
    latencies: list[float] = []
    executed: list[np.ndarray] = []
    model_version = ""
    failure: str | None = None
    done = False
    t0 = time.perf_counter()
    step = 0
    while step < spec.max_steps:
        if not plan:
            request = builder.build(obs, prompt, seed=request_seed(spec.seed, *spec.key, step))
            try:
                reply, ms = timed_infer(policy, request)
                latencies.append(ms)
                if isinstance(reply, dict):
                    model_version = str(reply.get("model_version", model_version))
                chunk = check_actions(reply, min_rows)
            except PolicyFailure as exc:
                failure = f"{exc.reason} (query {len(latencies)}, step {step})"
                break
            except PolicyError as exc:
                if is_infrastructure(exc):
                    raise
                failure = f"{from_server_error(exc).reason} (query {len(latencies) + 1}, step {step})"
                break
            plan.extend(chunk[: spec.actions_per_query])
        action = plan.popleft()
        # Render only if the next query will send this step's observation.
        obs, done = env.step(action, render=every or (query_cams if not plan else False))
        executed.append(action)
        step += 1
        if record_video:
            frames.append(side_by_side(obs))
        if on_step is not None:
            on_step(step, obs)
        if done:
            break
    elapsed = time.perf_counter() - t0
    return EpisodeOutcome(
        success=bool(done), steps=step, queries=len(latencies), failure=failure,
        latency_ms=float(np.mean(latencies)) if latencies else 0.0, model_version=model_version,
        env_steps_per_s=step / elapsed if elapsed > 0 else 0.0,
        actions=np.asarray(executed, dtype=np.float64).reshape(-1, 7), frames=frames)


def replay_frames(env: LiberoEnv, spec: EpisodeSpec, init_state: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
    """Re-simulate an episode with both cameras on to get its video frames.

    Physics does not depend on rendering (tests/sim prove states identical step by step), so
    replaying the recorded actions from the same seed and initial state reproduces the episode
    exactly; `--video failures` pays for rendering only on the episodes that failed.
    """
    frames = []
    env.reset(spec.seed, init_state, trial=spec.trial, render=False)
    for t in range(spec.num_steps_wait):
        obs, _ = env.step(NOOP_ACTION, render=True)
        frames.append(side_by_side(obs))
    for action in actions:
        obs, _ = env.step(action, render=True)
        frames.append(side_by_side(obs))
    return frames
