"""Record LeRobot v2.1 LIBERO datasets from the scripted expert (`sim_client record`).

    record_dataset("work_dirs/demo/data", suite="libero_object", tasks=[0], episodes_per_task=20, workers=2)

The layout is the public `*_no_noops_lerobotv2.1` one (`vla.data.libero.libero_features`):
both cameras at 256×256 turned upright, the 8-dim state (eef position + axis-angle + gripper
qpos), the 7-dim action applied from that frame, the task's instruction as its task string.

Each placement is first simulated without a camera (a dry run, physics only); only a successful one
is replayed with both cameras, the same executed actions from the same reset, and recorded. MuJoCo
is deterministic and rendering does not touch the physics, so the replay's states repeat the dry
run's bit for bit (checked frame by frame: a divergence is an error). A failed placement, which
used to cost a whole rendered step budget, now costs its physics alone.

Demonstrations start from fresh placements: `env.seed(s)` then `env.reset()`, which samples
every object in its BDDL region, never one of the 50 evaluation initial states. Episode `e` of
task `t` tries the reset seeds `seed + t * 100000 + e * MAX_SEEDS + k` (k = 0, 1, ...; the
default `seed` makes them disjoint from evaluation's seed 7) until the expert succeeds, so
only successful episodes are stored and a rerun records the same ones. After the settle steps
(not recorded) every frame renders both cameras; LIBERO's no-op actions (no motion and the
same gripper command as before, `vla.data.libero.noop_mask`) are executed but not stored.

`action_noise` (DART, Laskey et al. 2017): the action executed is the expert's plus Gaussian
noise of that standard deviation on the position and rotation dims (clipped to [-1, 1]; the
gripper command is never perturbed), while the action stored is the expert's own. The expert is
closed loop, so it corrects the drift, and the dataset shows the way back from states slightly
off its path: the states a learned policy reaches once its own small errors add up. The noise
comes from a generator seeded by the episode's reset seed, so a rerun records the same episodes.

Episodes are simulated in spawned worker processes (one env each, reused across a task's
episodes) and written by this process in plan order through `LeRobotWriter`, which makes an
episode whole on disk before counting it; a rerun appends after the last whole episode, so an
interrupted recording resumes where it stopped. The parameters that decide what an episode is
(suite, first seed, DART noise, step budget, resolution) are kept in `meta/recording.json`
(`RECORDING_FILE`); a rerun that asks for other values is refused, naming them, so a resumed dataset
never mixes two recordings. Asking for more episodes per task is a resume, not a change.
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
from vla.errors import VLAError

_logger = logging.getLogger(__name__)

RECORD_SEED = 100_000   # reset seeds of recordings start here; evaluation resets with seed 7
MAX_SEEDS = 20          # placements tried for one episode before the task is reported as failing
NUM_STEPS_WAIT = 10     # settle steps after reset (as evaluation), not recorded
RECORDING_FILE = "meta/recording.json"   # the parameters a resume must repeat (beside LeRobot's meta files)


def plan_episodes(tasks: Sequence[int], episodes_per_task: int) -> list[tuple[int, int]]:
    """(task_id, episode-of-task) in the order the dataset stores them."""
    return [(t, e) for t in tasks for e in range(episodes_per_task)]


def episode_seeds(seed: int, task_id: int, episode: int) -> range:
    start = seed + task_id * 100_000 + episode * MAX_SEEDS
    return range(start, start + MAX_SEEDS)


class ExpertFailed(VLAError, RuntimeError):
    """The expert failed every placement it tried for one episode of a task."""


class ReplayDiverged(VLAError, RuntimeError):
    """A successful dry run did not repeat when replayed with cameras (the simulator was not deterministic)."""


class _Recorder:
    """Worker side: one env at a time, reused for consecutive episodes of a task."""

    def __init__(self, suite: str, seed: int, resolution: int, max_steps: int | None, action_noise: float = 0.0):
        self.suite, self.seed, self.resolution, self.max_steps = suite, seed, resolution, max_steps
        self.action_noise = float(action_noise)
        self.env = None
        self.task = None

    def episode(self, task_id: int, episode: int) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
        from sim_client.env import LiberoEnv
        from sim_client.expert_goals import plan_task
        from sim_client.suites import get_tasks, max_steps
        from vla.data.libero import ACTION_KEY, IMAGE_KEY, STATE_KEY, WRIST_IMAGE_KEY, noop_mask

        if self.task is None or self.task.task_id != task_id:
            if self.env is not None:
                self.env.close()
            self.task = get_tasks(self.suite)[task_id]
            self.env = LiberoEnv(self.task, resolution=self.resolution, render="query")
        env, task = self.env, self.task
        goals = plan_task(task)
        budget = self.max_steps or max_steps(self.suite)
        tried = []
        for reset_seed in episode_seeds(self.seed, task_id, episode):
            run = self._dry_run(env, goals, budget, reset_seed)
            if run is None:
                tried.append(reset_seed)
                continue
            states, actions, executed = run
            agent, wrist = self._replay(env, reset_seed, executed, states, task_id)
            actions_arr = np.stack(actions)
            keep = ~noop_mask(actions_arr)
            data = {IMAGE_KEY: np.stack(agent)[keep], WRIST_IMAGE_KEY: np.stack(wrist)[keep],
                    STATE_KEY: np.stack(states)[keep], ACTION_KEY: actions_arr[keep]}
            return task.language, data, {"seed": reset_seed, "failed_seeds": tried, "steps": len(actions),
                                         "noops": int((~keep).sum())}
        raise ExpertFailed(f"the expert failed {self.suite} task {task_id} ({task.language!r}) from all "
                           f"{MAX_SEEDS} placements tried for episode {episode} (reset seeds {tried[0]}..{tried[-1]})")


    def _dry_run(self, env, goals, budget: int, reset_seed: int):
        """The expert's episode from this placement without a camera (physics only, ~15x faster than
        rendering both cameras here): (states, stored actions, executed actions) if it succeeds within
        `budget`, else None. A failed placement then costs almost nothing."""
        from sim_client.expert import Expert
        from vla.libero import libero_state

        obs = _settle(env, reset_seed, render=False)
        expert = Expert(env.problem, goals)
        noise = np.random.default_rng(reset_seed)
        states, actions, executed = [], [], []
        done = False
        while len(actions) < budget and not done:
            action = expert.act()
            states.append(libero_state(obs).astype(np.float32))
            actions.append(action.astype(np.float32))
            executed.append(perturb(action, self.action_noise, noise))
            obs, done = env.step(executed[-1])
        return (states, actions, executed) if done else None

    def _replay(self, env, reset_seed: int, executed: list[np.ndarray], states: list[np.ndarray],
                task_id: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Both cameras of every frame of a successful dry run: the same placement, the same executed
        actions. MuJoCo is deterministic and rendering does not touch the physics, so the states repeat
        bit for bit; they are checked, and a replay that diverges is an error, never a dataset."""
        from vla.libero import AGENTVIEW_KEY, WRIST_KEY, libero_state, rotate_180

        obs = _settle(env, reset_seed, render=True)
        agent, wrist = [], []
        done = False
        for k, action in enumerate(executed):
            if not np.array_equal(libero_state(obs).astype(np.float32), states[k]):
                raise ReplayDiverged(f"{self.suite} task {task_id}, reset seed {reset_seed}: the replay's state at "
                                     f"frame {k} differs from the dry run's; the simulator is not deterministic here")
            agent.append(rotate_180(obs[AGENTVIEW_KEY]))  # LIBERO renders upside down
            wrist.append(rotate_180(obs[WRIST_KEY]))
            obs, done = env.step(action, render=k < len(executed) - 1)   # the last state's images are not stored
        if not done:
            raise ReplayDiverged(f"{self.suite} task {task_id}, reset seed {reset_seed}: the dry run succeeded at "
                                 f"step {len(executed)}, the replay did not")
        return agent, wrist


def _settle(env, reset_seed: int, *, render: bool) -> dict[str, Any]:
    """Reset to the placement of `reset_seed`, then the settle steps (not recorded); the observation
    after them, with both cameras when `render` (only the last settle step renders)."""
    from sim_client.env import NOOP_ACTION

    obs = env.reset(reset_seed, None, render=render and NUM_STEPS_WAIT == 0)
    for t in range(NUM_STEPS_WAIT):
        obs, _ = env.step(NOOP_ACTION, render=render and t == NUM_STEPS_WAIT - 1)
    return obs


def perturb(action: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """The action to execute: `action` plus N(0, std) on the 6 arm dims, clipped to [-1, 1]; the
    gripper command (dim 6) untouched. std 0 returns `action` itself."""
    if std <= 0:
        return action
    out = np.array(action, dtype=np.float64)
    out[:6] = np.clip(out[:6] + rng.normal(0.0, std, 6), -1.0, 1.0)
    return out


_RECORDER: _Recorder | None = None


def _init_worker(suite: str, seed: int, resolution: int, max_steps: int | None, action_noise: float) -> None:
    global _RECORDER
    _RECORDER = _Recorder(suite, seed, resolution, max_steps, action_noise)


def _record_one(item: tuple[int, int]):
    task_id, episode = item
    language, data, info = _RECORDER.episode(task_id, episode)
    return task_id, episode, language, data, info


def recording_params(*, suite: str, seed: int, action_noise: float, max_steps: int | None,
                     resolution: int) -> dict[str, Any]:
    return {"recorder": "sim_client record", "policy": "expert", "suite": suite, "seed": int(seed),
            "action_noise": float(action_noise), "max_steps": max_steps, "resolution": int(resolution)}


def check_recording(root: Path, done: int, params: dict[str, Any]) -> None:
    """Write `params` beside a new dataset's meta files; refuse a resume that asks for other ones."""
    from vla.io import read_json, write_json

    path = root / RECORDING_FILE
    if not path.is_file():
        if done:
            raise SimClientError(f"{root} holds {done} episodes but no {RECORDING_FILE}: it was not recorded by "
                                 f"this recorder (or by an older one), so a resume cannot tell whether it would "
                                 f"mix two recordings; record into an empty directory")
        write_json(path, params)
        return
    stored = read_json(path, error=SimClientError)
    changed = sorted(k for k in params if stored.get(k) != params[k])
    if changed:
        asked = ", ".join(f"{k}={params[k]!r} (recorded: {stored.get(k)!r})" for k in changed)
        raise SimClientError(f"{root}: this run asks for {asked}; a resume must repeat the first run's parameters "
                             f"({path}), or record into an empty directory")


def record_dataset(root: str | os.PathLike, *, suite: str = "libero_object", tasks: Iterable[int] | None = None,
                   episodes_per_task: int = 10, workers: int = 2, seed: int = RECORD_SEED,
                   resolution: int = 256, max_steps: int | None = None, renderer: str = "auto",
                   action_noise: float = 0.0, progress: bool = True,
                   log: Callable[[str], None] = _logger.info) -> dict[str, Any]:
    """Record (or finish recording) the expert dataset at `root`; returns counts and timings."""
    from sim_client.expert_goals import check_tasks
    from sim_client.render import choose_renderer, environ, worker_env
    from sim_client.suites import ensure_libero_config, get_tasks
    from vla.data.libero import LIBERO_FPS, libero_features
    from vla.data.writer import LeRobotWriter

    if episodes_per_task < 1 or workers < 1:
        raise SimClientError(f"record_dataset: episodes_per_task and workers must be >= 1 "
                         f"(got {episodes_per_task}, {workers})")
    if not 0.0 <= action_noise <= 1.0:
        raise SimClientError(f"record_dataset: action_noise {action_noise} must be in [0, 1] (a standard "
                             f"deviation in action units, which span [-1, 1])")
    if seed < 1000:
        raise SimClientError(f"record_dataset: seed {seed} is below 1000; evaluation resets with seed 7 and "
                         f"recordings must use disjoint reset seeds")
    ensure_libero_config()
    all_tasks = get_tasks(suite)
    tasks = list(range(len(all_tasks))) if tasks is None else list(tasks)
    bad = [t for t in tasks if not 0 <= t < len(all_tasks)]
    if bad or not tasks:
        raise SimClientError(f"record_dataset: {suite} has tasks 0..{len(all_tasks) - 1}, got {bad or 'none'}")
    check_tasks(suite, tasks)
    plan = plan_episodes(tasks, episodes_per_task)
    t0 = time.perf_counter()
    with LeRobotWriter(root, fps=LIBERO_FPS, features=libero_features(resolution), robot_type="panda") as writer:
        done = writer.num_episodes
        check_recording(Path(root), done, recording_params(suite=suite, seed=seed, action_noise=action_noise,
                                                           max_steps=max_steps, resolution=resolution))
        if done > len(plan):
            raise SimClientError(f"{root} already holds {done} episodes, more than the {len(plan)} planned; "
                             f"record into an empty directory")
        for i, (task_id, _) in enumerate(plan[:done]):
            if writer.episodes[i]["tasks"] != [all_tasks[task_id].language]:
                raise SimClientError(f"{root}: episode {i} is {writer.episodes[i]['tasks']}, but this plan puts "
                                 f"task {task_id} there; record into an empty directory or repeat the first "
                                 f"command's --suite/--tasks/--episodes-per-task")
        todo = plan[done:]
        if not todo:
            return {"episodes": done, "recorded": 0, "frames": writer.num_frames, "seconds": 0.0}
        chosen, _fps = choose_renderer(renderer)
        n = min(workers, len(todo))
        log(f"record: {len(todo)} expert episodes ({done} already on disk) of {suite} tasks {tasks}, "
            f"{n} simulator process(es), renderer {chosen}"
            + (f", executed actions perturbed by N(0, {action_noise}) (stored: the expert's)" if action_noise else ""))
        bar = _progress(len(todo), progress)
        frames = 0
        with environ(worker_env(chosen, threads=1)):  # spawned workers inherit it: MuJoCo reads MUJOCO_GL
            ctx = mp.get_context("spawn")
            # One episode per hand-out: each lands on disk as soon as it is done (a block of episodes
            # would reach the parent only whole, so progress and resume would wait for it, and a worker
            # killed mid-block would take the block with it). Workers keep their env per task.
            with ctx.Pool(n, initializer=_init_worker, initargs=(suite, seed, resolution, max_steps, action_noise)) as pool:
                for i, (task_id, episode, language, data, info) in enumerate(
                        pool.imap(_record_one, todo, chunksize=1), start=1):
                    index = writer.add_episode(data, task=language)
                    frames += len(data["action"])
                    msg = (f"record: episode {index} (task {task_id} #{episode}, reset seed {info['seed']}"
                           f"{', after ' + str(len(info['failed_seeds'])) + ' failed' if info['failed_seeds'] else ''})"
                           f" {len(data['action'])} frames, {info['noops']} no-ops dropped")
                    if bar is not None:
                        bar.set_postfix_str(f"task {task_id}, {frames} frames", refresh=False)
                        bar.update(1)
                    else:
                        log(msg + f" [{i}/{len(todo)}, {time.perf_counter() - t0:.0f}s]")
        if bar is not None:
            bar.close()
        total = writer.num_episodes
        total_frames = writer.num_frames
    return {"episodes": total, "recorded": len(todo), "frames": total_frames,
            "seconds": round(time.perf_counter() - t0, 1)}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ep", desc="record", dynamic_ncols=True)


def build_parser():
    import argparse

    from sim_client.args import int_list

    p = argparse.ArgumentParser(prog="sim_client record",
                                description="record a LeRobot v2.1 dataset of scripted-expert demonstrations")
    p.add_argument("--suite", required=True, help="LIBERO suite, e.g. libero_object")
    p.add_argument("--policy", choices=("expert",), default="expert", help="who acts: the scripted expert")
    p.add_argument("--tasks", type=int_list, help="task ids, e.g. 0,5 (default: all)")
    p.add_argument("--episodes-per-task", type=int, required=True)
    p.add_argument("--out", required=True, help="dataset root (a rerun resumes it)")
    p.add_argument("--workers", type=int, default=2, help="simulator processes (each ~2.6 GB RAM)")
    p.add_argument("--seed", type=int, default=RECORD_SEED, help=f"first reset seed (default {RECORD_SEED})")
    p.add_argument("--max-steps", type=int, help="step budget per episode (default: the suite's evaluation budget)")
    p.add_argument("--renderer", choices=("auto", "egl", "osmesa"), default="auto")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std of the Gaussian noise added to the executed arm actions, not to the stored ones "
                        "(DART: the data then shows how the expert recovers; default 0)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """`sim_client record ...` (see sim_client.cli)."""
    import sys

    p = build_parser()
    args = p.parse_args(argv)
    try:
        out = record_dataset(args.out, suite=args.suite, tasks=args.tasks, episodes_per_task=args.episodes_per_task,
                             workers=args.workers, seed=args.seed, max_steps=args.max_steps,
                             renderer=args.renderer, action_noise=args.action_noise,
                             progress=not args.no_progress)
    except VLAError as exc:  # bad input, an uncovered task, LIBERO missing, the expert failing a task
        print(f"sim_client record: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sim_client record: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"dataset: {Path(args.out)}  episodes {out['episodes']} (+{out['recorded']} now), "
          f"frames {out['frames']}, {out['seconds']} s")
    return 0
