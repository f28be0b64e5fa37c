"""Shared by benchmarks/eval_render.py and benchmarks/eval_workers.py: run real episodes against a
stand-in server and turn results.jsonl into steady-state throughput.

Env creation (6-10 s, once per task per worker, amortised over 50 trials in a real run) is
excluded, using the workers' own timestamps (`started_at` after env setup, `finished_at`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sim_client.results import read_results
from sim_client.runner import EvalConfig, run_eval


def throughput(lines: list[dict[str, Any]]) -> dict[str, float]:
    """Steady-state throughput while every worker is running episodes.

    Workers finish env creation at different times, so the window is from the last worker's
    first episode start to the first worker's last episode end; steps inside it are counted
    pro rata over each episode's own interval. With one worker the window is its whole span.
    """
    done = [x for x in lines if not x.get("error")]
    if len(done) != len(lines):
        errors = [x["error"] for x in lines if x.get("error")]
        raise RuntimeError(f"benchmark episodes failed with infrastructure errors: {errors[:3]}")
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for x in done:
        by_pid.setdefault(x["pid"], []).append(x)
    lo = max(min(x["started_at"] for x in xs) for xs in by_pid.values())
    hi = min(max(x["finished_at"] for x in xs) for xs in by_pid.values())
    if hi <= lo:
        raise RuntimeError("workers never ran episodes at the same time: give the benchmark more episodes")
    steps = 0.0
    for x in done:
        a, b = x["started_at"], x["finished_at"]
        overlap = max(0.0, min(b, hi) - max(a, lo))
        steps += x["steps"] * overlap / (b - a)
    per_episode = sum(x["steps"] for x in done) / len(done)
    busy = sum(x["finished_at"] - x["started_at"] for x in done)
    cpu_share = sum(x.get("cpu_s", 0.0) for x in done) / busy if busy > 0 else 0.0
    steps_per_s = steps / (hi - lo)
    return {"episodes": len(done), "workers_seen": len(by_pid), "window_s": hi - lo,
            "steps_per_s": steps_per_s, "episodes_per_min": 60.0 * steps_per_s / per_episode,
            "cores_used": cpu_share * len(by_pid),  # < workers when other jobs share the cores
            "span_s": max(x["finished_at"] for x in done) - min(x["started_at"] for x in done),
            "steps": sum(x["steps"] for x in done)}


def measure(server_url: str, *, workers: int, render: str, trials: int, max_steps: int,
            threads: int | None = None, suite: str = "libero_10", task: int = 0, renderer: str = "auto",
            chunk: int = 10, wait: int = 10) -> dict[str, Any]:
    cfg = EvalConfig(task_suite_name=suite, tasks=[task], num_trials_per_task=trials, max_steps=max_steps,
                     workers=workers, render=render, renderer=renderer, threads_per_worker=threads,
                     eval_chunk_size=chunk, num_steps_wait=wait, progress=False, retries=0)
    with tempfile.TemporaryDirectory(prefix="eval_bench_") as out:
        result = run_eval(cfg, server_url, out, log=lambda m: None)
        lines = read_results(Path(out) / "results.jsonl")
    stats = throughput(lines)
    stats.update(workers=workers, render=render, threads=threads, renderer=result.summary["renderer"])
    return stats


def libero_10_episodes_per_hour(steps_per_s: float, steps: int = 520 + 10) -> float:
    """Episodes per hour at the full libero_10 budget (a failed episode runs all 520 steps + warm-up)."""
    return 3600.0 * steps_per_s / steps
