"""Shared by benchmarks/eval_render.py and benchmarks/eval_workers.py: run real episodes against a
stand-in server and turn results.jsonl into steady-state throughput.

Env creation (6-10 s, once per task per worker, amortised over 50 trials in a real run) is
excluded: throughput is episodes over the span from the first episode start after env setup
to the last episode end, as the workers' own timestamps record them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sim_client.results import read_results
from sim_client.runner import EvalConfig, run_eval


def throughput(lines: list[dict[str, Any]]) -> dict[str, float]:
    done = [x for x in lines if not x.get("error")]
    if len(done) != len(lines):
        errors = [x["error"] for x in lines if x.get("error")]
        raise RuntimeError(f"benchmark episodes failed with infrastructure errors: {errors[:3]}")
    span = max(x["finished_at"] for x in done) - min(x["started_at"] for x in done)
    steps = sum(x["steps"] for x in done)
    return {"episodes": len(done), "span_s": span, "episodes_per_min": 60.0 * len(done) / span,
            "steps_per_s": steps / span, "steps": steps}


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
