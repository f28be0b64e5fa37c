"""Scripted-expert success on LIBERO's standard initial states, per task.

Runs the expert (`sim_client --policy expert`) through the evaluation loop exactly as a policy
server is evaluated (seed 7, the tasks' fixed initial states, 10 settle steps, openpi's step
budgets), then prints the per-task table and one RESULT line with the lowest task success.
Goal: >= 0.9 on every task of libero_object and libero_spatial (50 initial states each).
A rerun with the same --out resumes.

    .venv/bin/python benchmarks/expert_success.py [--suites libero_object,libero_spatial] \
        [--tasks 0,1] [--trials 50] [--workers 2] [--out work_dirs/bench/expert_success]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

GOAL = 0.9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", default="libero_object,libero_spatial")
    p.add_argument("--tasks", help="task ids, e.g. 0,5 (default: all)")
    p.add_argument("--trials", type=int, default=50, help="initial states per task (the standard 50)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="work_dirs/bench/expert_success")
    p.add_argument("--renderer", default="auto")
    args = p.parse_args()

    from sim_client.expert import ExpertPolicy
    from sim_client.expert_goals import check_tasks
    from sim_client.runner import EvalConfig, run_eval

    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else None
    cfg = EvalConfig(task_suite_name=args.suites, num_trials_per_task=args.trials, tasks=tasks,
                     workers=args.workers, renderer=args.renderer)
    for suite in cfg.suites():
        check_tasks(suite, tasks)
    result = run_eval(cfg, ExpertPolicy, args.out, log=lambda m: print(m, file=sys.stderr))
    print(result.table)
    rates = [t["rate"] for t in result.summary["tasks"] if t.get("rate") is not None]
    mean_steps = [round(t["steps"] / t["episodes"]) for t in result.summary["tasks"] if t["episodes"]]
    print(f"tasks {len(rates)}, trials per task {args.trials}, mean task success "
          f"{sum(rates) / max(1, len(rates)):.3f}, min {min(rates) if rates else float('nan'):.3f}, "
          f"mean steps per task {mean_steps}")
    worst = min(rates) if rates else 0.0
    ok = bool(rates) and worst >= GOAL and result.complete
    print(f"RESULT expert_success_min_task {worst:.3f} goal >= {GOAL} {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
