"""Parent side of the worker pool: hand out episodes, replace dead or stuck workers, retry.

Each worker gets one episode at a time over its own Pipe (a shared queue could be left locked
by a worker killed mid-read). Episodes of the task a worker already has loaded go to it first,
so envs are reused across a task's trials. A worker that dies (segfault, OOM kill) or runs past
`episode_timeout_s` is killed and replaced, and its episode retried; so is an episode that came
back with an infrastructure error. After `retries` retries the episode is recorded with its
error — never as a policy failure, never dropped. An error the server marked not retryable (a
request over its size limit, a wrong token: the same request can never succeed) is recorded
after its first attempt (`retryable: false` on its line); a resume still re-runs it.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable

from sim_client.errors import SimClientError
from sim_client.render import environ
from sim_client.worker import WorkerConfig, worker_main


@dataclass
class _Slot:
    proc: Any
    conn: Any
    episode: dict[str, Any] | None = None
    started: float = 0.0
    task: tuple[str, int] | None = None


@dataclass
class PoolStats:
    replaced: int = 0
    retried: int = 0
    timeouts: int = 0
    crashes: int = 0
    log: list[str] = field(default_factory=list)


class WorkerPool:
    def __init__(self, workers: int, worker_cfg: WorkerConfig, env: dict[str, str], *,
                 episode_timeout_s: float = 1800.0, retries: int = 2):
        if workers < 1:
            raise SimClientError(f"--workers must be >= 1, got {workers}")
        self.n = workers
        self.worker_cfg = worker_cfg
        self.env = env
        self.episode_timeout_s = episode_timeout_s
        self.retries = retries
        self.ctx = mp.get_context("spawn")
        self.slots: list[_Slot] = []
        self.stats = PoolStats()
        self._stop = False

    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        with environ(self.env):  # spawned children inherit the parent's environment at start
            proc = self.ctx.Process(target=worker_main, args=(child, self.worker_cfg), daemon=True)
            proc.start()
        child.close()
        return _Slot(proc, parent)

    def _kill(self, slot: _Slot) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(timeout=10)
        slot.conn.close()

    def stop(self, *_: Any) -> None:
        """Signal handler: stop handing out episodes; in-flight ones are abandoned, not recorded."""
        self._stop = True

    def run(self, episodes: list[dict[str, Any]], on_result: Callable[[dict[str, Any]], None]) -> bool:
        """Run every episode; `on_result(line)` gets each final line. False if stopped early."""
        pending = collections.deque((ep, 0) for ep in episodes)
        attempts: dict[tuple, int] = {}
        self.slots = [self._spawn() for _ in range(min(self.n, max(1, len(episodes))))]
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self.stop)

        def key(ep):
            return (ep["suite"], ep["task_id"], ep["trial"])

        def failed_attempt(ep, message: str) -> int | None:
            """Count a failed attempt; requeue `ep` and return None, or its attempt count when out of retries."""
            n = attempts.get(key(ep), 0) + 1
            attempts[key(ep)] = n
            self.stats.log.append(f"{key(ep)} attempt {n}: {message}")
            if n <= self.retries:
                self.stats.retried += 1
                pending.appendleft((ep, n))
                return None
            return n

        def infra_failure(slot: _Slot, message: str) -> None:
            ep = slot.episode
            slot.episode = None
            n = failed_attempt(ep, message)
            if n is not None:
                on_result(_error_line(ep, message, n))

        try:
            while (pending or any(s.episode for s in self.slots)) and not self._stop:
                for slot in self.slots:
                    if slot.episode is None and pending:
                        ep, _ = _take(pending, slot.task)
                        slot.episode, slot.started, slot.task = ep, time.monotonic(), (ep["suite"], ep["task_id"])
                        try:
                            slot.conn.send(("episode", ep))
                        except (BrokenPipeError, OSError):
                            pass  # its sentinel fires below
                busy = {s.conn: s for s in self.slots if s.episode}
                sentinels = {s.proc.sentinel: s for s in self.slots}
                ready = wait(list(busy) + list(sentinels), timeout=0.5)
                for r in ready:
                    if r in busy:
                        slot = busy[r]
                        try:
                            kind, line = slot.conn.recv()
                        except (EOFError, OSError):
                            continue  # died: handled through its sentinel
                        ep = slot.episode
                        slot.episode = None
                        if line.get("error") and line.get("retryable") is not False:
                            n = failed_attempt(ep, line["error"])
                            if n is None:
                                continue
                            line["attempts"] = n
                        else:
                            line["attempts"] = attempts.get(key(ep), 0) + 1
                        on_result(line)
                for i, slot in enumerate(self.slots):
                    dead = not slot.proc.is_alive()
                    late = slot.episode is not None and time.monotonic() - slot.started > self.episode_timeout_s
                    if not (dead or late) or self._stop:
                        continue
                    self._kill(slot)
                    if late:
                        self.stats.timeouts += 1
                        why = f"episode exceeded --episode-timeout-s {self.episode_timeout_s:g}"
                    else:
                        self.stats.crashes += 1
                        why = f"worker died (exit code {slot.proc.exitcode})"
                    if slot.episode is not None:
                        infra_failure(slot, why)
                    self.stats.replaced += 1
                    self.slots[i] = self._spawn()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.close()
        return not self._stop

    def close(self) -> None:
        for slot in self.slots:
            if slot.proc.is_alive() and slot.episode is None:
                try:
                    slot.conn.send(("stop",))
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + 5
        for slot in self.slots:
            slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            self._kill(slot)
        self.slots = []


def _take(pending: collections.deque, task: tuple[str, int] | None):
    """Next episode, preferring one of the task the worker has loaded (env reuse)."""
    if task is not None:
        for i, (ep, n) in enumerate(pending):
            if (ep["suite"], ep["task_id"]) == task:
                del pending[i]
                return ep, n
    return pending.popleft()


def _error_line(ep: dict[str, Any], message: str, attempts: int) -> dict[str, Any]:
    from sim_client.results import FIELDS

    line = {k: None for k in FIELDS}
    line.update(suite=ep["suite"], task_id=ep["task_id"], trial=ep["trial"], seed=ep["seed"], success=False,
                steps=0, error=message, attempts=attempts)
    return line
