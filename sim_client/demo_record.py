"""Record a small LIBERO-format LeRobot v2.1 dataset from the real LIBERO simulator.

    record_dataset("work_dirs/demo/data", suite="libero_10", tasks=range(10), episodes_per_task=2,
                   steps=40, workers=2)

Each episode starts from one of the task's fixed initial states, lets the objects settle with
no-op steps (as LIBERO evaluation does), then runs a smoothed-random controller: an
Ornstein-Uhlenbeck walk of end-effector deltas with a downward then upward drift and the
gripper closing half way — a reach-and-grasp motion with no knowledge of the objects. Every
frame stores both cameras (turned upright, as the public LIBERO conversions are), the 8-dim
state (eef position + axis-angle + gripper qpos) and the 7-dim action applied from that frame.

Episodes are simulated in spawned worker processes (one env each, reused across a task's
episodes) and written by this process in plan order with `LeRobotWriter`, which makes each
episode complete on disk before counting it; a rerun appends after the last complete episode,
so an interrupted recording loses at most the episodes in flight.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from sim_client.errors import SimClientError

_logger = logging.getLogger(__name__)
NUM_STEPS_WAIT = 10  # no-op steps before recording: LIBERO's objects drop into place at reset


def plan_episodes(tasks: Sequence[int], episodes_per_task: int) -> list[tuple[int, int]]:
    """(task_id, episode-of-task) in the order the dataset stores them."""
    return [(t, e) for t in tasks for e in range(episodes_per_task)]


def controller_actions(rng: np.random.Generator, steps: int) -> np.ndarray:
    """Smoothed-random reach-and-grasp actions in LIBERO's [-1, 1] OSC delta space, [steps, 7]."""
    actions = np.zeros((steps, 7), dtype=np.float32)
    walk = np.zeros(6)
    half = steps // 2
    scale = np.array([0.6, 0.6, 0.6, 0.15, 0.15, 0.15])
    for t in range(steps):
        walk = 0.85 * walk + 0.15 * rng.normal(0.0, 1.0, 6) * 3.0  # OU: correlated over ~7 steps
        drift = np.array([0.0, 0.0, -0.4 if t < half else 0.4, 0.0, 0.0, 0.0])
        actions[t, :6] = np.clip(walk * scale + drift, -1.0, 1.0)
        actions[t, 6] = -1.0 if t < half else 1.0  # open, then close the gripper
    return actions


class _Recorder:
    """Worker-side: one env at a time, reused for consecutive episodes of a task."""

    def __init__(self, suite: str, steps: int, seed: int, resolution: int):
        self.suite, self.steps, self.seed, self.resolution = suite, steps, seed, resolution
        self.env = None
        self.task_id = None

    def episode(self, task_id: int, episode: int) -> tuple[str, dict[str, np.ndarray]]:
        from sim_client.env import NOOP_ACTION, LiberoEnv
        from sim_client.suites import get_tasks, load_init_states
        from vla.data.libero import ACTION_KEY, IMAGE_KEY, STATE_KEY, WRIST_IMAGE_KEY
        from vla.libero import AGENTVIEW_KEY, WRIST_KEY, libero_state, rotate_180

        task = get_tasks(self.suite)[task_id]
        if self.task_id != task_id:
            if self.env is not None:
                self.env.close()
            self.env = LiberoEnv(task, resolution=self.resolution, render="query")
            self.task_id = task_id
        init_states = load_init_states(task.init_states_file)
        env = self.env
        obs = env.reset(self.seed + episode, init_states[episode % len(init_states)])
        for t in range(NUM_STEPS_WAIT):
            obs, _ = env.step(NOOP_ACTION, render=t == NUM_STEPS_WAIT - 1)
        actions = controller_actions(np.random.default_rng([self.seed, task_id, episode]), self.steps)
        agent, wrist, states = [], [], []
        for action in actions:
            agent.append(rotate_180(obs[AGENTVIEW_KEY]))   # upright, as the LeRobot conversions store them
            wrist.append(rotate_180(obs[WRIST_KEY]))
            states.append(libero_state(obs).astype(np.float32))
            obs, _done = env.step(action, render=True)
        data = {IMAGE_KEY: np.stack(agent), WRIST_IMAGE_KEY: np.stack(wrist), STATE_KEY: np.stack(states),
                ACTION_KEY: actions}
        return task.language, data


_RECORDER: _Recorder | None = None


def _init_worker(suite: str, steps: int, seed: int, resolution: int) -> None:
    global _RECORDER
    _RECORDER = _Recorder(suite, steps, seed, resolution)


def _record_one(item: tuple[int, int]) -> tuple[int, int, str, dict[str, np.ndarray]]:
    task_id, episode = item
    language, data = _RECORDER.episode(task_id, episode)
    return task_id, episode, language, data


def record_dataset(root: str | os.PathLike, *, suite: str = "libero_10", tasks: Iterable[int] | None = None,
                   episodes_per_task: int = 2, steps: int = 40, workers: int = 2, seed: int = 0,
                   resolution: int = 256, renderer: str = "auto",
                   log: Callable[[str], None] = _logger.info) -> dict[str, Any]:
    """Record (or finish recording) the dataset at `root`; returns counts and timings."""
    from sim_client.render import choose_renderer, environ, worker_env
    from sim_client.suites import ensure_libero_config, get_tasks
    from vla.data.libero import LIBERO_FPS, libero_features
    from vla.data.writer import LeRobotWriter

    if steps < 1 or episodes_per_task < 1 or workers < 1:
        raise SimClientError(f"record_dataset: steps, episodes_per_task and workers must be >= 1 "
                         f"(got {steps}, {episodes_per_task}, {workers})")
    ensure_libero_config()
    all_tasks = get_tasks(suite)
    tasks = list(range(len(all_tasks))) if tasks is None else list(tasks)
    bad = [t for t in tasks if not 0 <= t < len(all_tasks)]
    if bad:
        raise SimClientError(f"record_dataset: {suite} has tasks 0..{len(all_tasks) - 1}, got {bad}")
    plan = plan_episodes(tasks, episodes_per_task)
    t0 = time.perf_counter()
    with LeRobotWriter(root, fps=LIBERO_FPS, features=libero_features(resolution), robot_type="panda") as writer:
        done = writer.num_episodes
        if done > len(plan):
            raise SimClientError(f"{root} already holds {done} episodes, more than the {len(plan)} planned; "
                             f"record into an empty directory")
        todo = plan[done:]
        if not todo:
            return {"episodes": done, "recorded": 0, "seconds": 0.0}
        chosen, _fps = choose_renderer(renderer)
        env = worker_env(chosen, threads=1)
        log(f"record: {len(todo)} episodes ({len(plan) - len(todo)} already on disk) of {suite} tasks "
            f"{tasks[0]}..{tasks[-1]}, {steps} steps each, {min(workers, len(todo))} simulator processes, "
            f"renderer {chosen}")
        with environ(env):  # spawned workers inherit it: MuJoCo reads MUJOCO_GL at import
            ctx = mp.get_context("spawn")
            # Contiguous runs of one task per worker: each env is built once, not once per episode.
            chunk = max(1, episodes_per_task)
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker,
                          initargs=(suite, steps, seed, resolution)) as pool:
                for i, (task_id, episode, language, data) in enumerate(
                        pool.imap(_record_one, todo, chunksize=chunk), start=1):
                    index = writer.add_episode(data, task=language)
                    log(f"record: episode {index} (task {task_id}, #{episode}) {len(data['action'])} frames "
                        f"[{i}/{len(todo)}, {time.perf_counter() - t0:.0f}s] {language}")
        total = writer.num_episodes
    return {"episodes": total, "recorded": len(todo), "seconds": time.perf_counter() - t0}
