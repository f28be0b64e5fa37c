"""The simulator process: owns one LIBERO env at a time and runs the episodes it is sent.

Runs in a spawned subprocess (MuJoCo/GL state must not be forked). Messages over its Pipe:
parent → worker: `("episode", dict)` or `("stop",)`;
worker → parent: `("result", line)` with `error` set for infrastructure failures (retried, unless the line says
`retryable: false`) and
`failure` set when the policy's reply ended the episode (final: sim_client.contract).
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_client.results import FIELDS
from vla.wire.server_info import ServerInfo


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker process is started with (picklable: it crosses the spawn).

    policy         a server URL (grpc:// ws:// http://), or a picklable zero-argument factory
    server_info    the server's ServerInfo, read once by the parent (the request layout follows it)
    resize_size    openpi-layout image size
    render         which cameras the env renders (`--render`)
    video          `none`, `failures` or `all` (`--video`)
    out            the evaluation's output directory (videos go under it)
    client_kwargs  `connect()` options for a server URL (timeouts, retries)
    """

    policy: Any
    server_info: ServerInfo
    resize_size: int
    render: str
    video: str
    out: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)


class WorkerState:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.env = None
        self.env_task: tuple[str, int] | None = None
        self.init_states = None
        self.task = None
        self.policy = None
        self.builder = None

    def ensure_policy(self):
        from sim_client.policy import RequestBuilder, make_policy

        if self.policy is None:
            self.policy = make_policy(self.cfg.policy, **self.cfg.client_kwargs)
            self.builder = RequestBuilder(self.cfg.server_info, resize_size=self.cfg.resize_size)
        return self.policy

    def ensure_env(self, suite: str, task_id: int):
        from sim_client.env import LiberoEnv
        from sim_client.suites import get_tasks, load_init_states

        if self.env_task != (suite, task_id):
            self.drop_env()
            self.task = get_tasks(suite)[task_id]
            self.init_states = load_init_states(self.task.init_states_file)
            self.env = LiberoEnv(self.task, render=self.cfg.render)
            self.env_task = (suite, task_id)
        return self.env

    def drop_env(self):
        if self.env is not None:
            self.env.close()
        self.env, self.env_task = None, None

    def run(self, ep: dict[str, Any]) -> dict[str, Any]:
        from sim_client.episode import EpisodeSpec, replay_frames, run_episode
        from sim_client.video import video_name, write_mp4
        from vla.wire import PolicyError

        spec = EpisodeSpec(**ep)
        t0 = time.perf_counter()
        line: dict[str, Any] = {k: None for k in FIELDS}
        line.update(suite=spec.suite, task_id=spec.task_id, trial=spec.trial, seed=spec.seed, success=False,
                    steps=0, error=None, video=None)
        try:
            policy = self.ensure_policy()
            t_env = time.perf_counter()
            env = self.ensure_env(spec.suite, spec.task_id)
            # Env creation (once per task per worker) is reported apart: benchmarks exclude it.
            line["env_setup_s"] = round(time.perf_counter() - t_env, 3)
            line["started_at"] = time.time()
            cpu0 = time.process_time()
            line["task"] = self.task.language
            if spec.trial >= len(self.init_states):
                raise ValueError(f"{spec.suite} task {spec.task_id} has {len(self.init_states)} initial states; "
                                 f"trial {spec.trial} does not exist")
            bind = getattr(policy, "bind", None)  # an in-worker policy that reads the simulator (the expert)
            if bind is not None:
                bind(env, self.task)
            video = self.cfg.video
            out = run_episode(env, policy, self.builder, spec, self.task.language, self.init_states[spec.trial],
                              record_video=video == "all")
            line.update(success=out.success, steps=out.steps, failure=out.failure, model_version=out.model_version,
                        latency_ms=round(out.latency_ms, 3), queries=out.queries,
                        steps_per_s=round(out.env_steps_per_s, 2))
            if video == "all" or (video == "failures" and not out.success):
                frames = out.frames or replay_frames(env, spec, self.init_states[spec.trial], out.actions)
                name = video_name(spec.suite, spec.task_id, spec.trial, "success" if out.success else "failure",
                                  self.task.language)
                write_mp4(Path(self.cfg.out) / "videos" / name, frames)
                line["video"] = f"videos/{name}"
        except PolicyError as exc:
            line["error"] = f"server: {exc}"
            if not exc.retryable:   # e.g. a request over the server's size limit: the pool records it at once
                line["retryable"] = False
            if self.policy is not None:
                self.policy.close()
            self.policy = None
        except Exception as exc:  # an env that raised may be broken: rebuild it for the next episode
            line["error"] = f"env: {type(exc).__name__}: {exc}"
            line["traceback"] = traceback.format_exc(limit=6)
            self.drop_env()
        if line.get("started_at"):
            # CPU this process got while running the episode: on a shared machine, the share of a
            # core the episode really had (benchmarks print it next to wall-clock throughput).
            line["cpu_s"] = round(time.process_time() - cpu0, 3)
        line["duration_s"] = round(time.perf_counter() - t0, 3)
        line["finished_at"] = time.time()
        line["pid"] = os.getpid()
        return line


def worker_main(conn, cfg: WorkerConfig) -> None:
    import signal

    # Ctrl-C goes to the whole process group: the parent decides what stops, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = WorkerState(cfg)
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            if msg[0] == "episode":
                conn.send(("result", state.run(msg[1])))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        state.drop_env()
        if state.policy is not None:
            state.policy.close()
