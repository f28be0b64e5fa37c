"""Parallel evaluation: episodes per minute with 2 workers over 1 worker, the same stand-in
server (scripted no-op over gRPC), real LIBERO episodes, measured side by side in one run, each
side with its best thread setting (1 worker tries 1 and 2 render/numeric threads; 2 workers get
1 each). Both ratios are printed, render-every-step and render-on-query; the RESULT line is the
default mode, render-on-query. Goal: >= 1.6x on this 2-core machine.

    .venv/bin/python benchmarks/eval_workers.py [--episodes 6] [--max-steps 150] [--modes query,every]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

GOAL = 1.6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=6, help="episodes per setting")
    p.add_argument("--max-steps", type=int, default=150, help="render-on-query step budget")
    p.add_argument("--every-max-steps", type=int, default=60, help="render-every-step budget (5x slower)")
    p.add_argument("--modes", default="query,every")
    p.add_argument("--renderer", default="auto")
    args = p.parse_args()

    from benchmarks._serve_common import noop_grpc_server
    from sim_client.bench import measure
    from sim_client.render import choose_renderer

    server, url = noop_grpc_server(max_batch_size=2, max_queue_delay_ms=0.5)
    renderer, fps = choose_renderer(args.renderer)
    print(f"renderer {renderer} (probe fps {fps})")
    ratios = {}
    try:
        for mode in args.modes.split(","):
            steps = args.max_steps if mode == "query" else args.every_max_steps
            run = dict(render=mode, trials=args.episodes, max_steps=steps, renderer=renderer)
            one = [measure(url, workers=1, threads=t, **run) for t in (1, 2)]
            best = max(one, key=lambda r: r["episodes_per_min"])
            two = measure(url, workers=2, threads=1, **run)
            for r in (*one, two):
                print(f"render={mode:<6} workers={r['workers']} threads={r['threads']}: "
                      f"{r['episodes_per_min']:6.2f} episodes/min, {r['steps_per_s']:6.1f} steps/s, "
                      f"{r['cores_used']:.2f} cores used "
                      f"({r['episodes']} episodes x {steps} steps)")
            ratios[mode] = two["episodes_per_min"] / best["episodes_per_min"]
            per_core = (two["episodes_per_min"] / two["cores_used"]) / (best["episodes_per_min"] / best["cores_used"])
            print(f"render={mode}: 2 workers / best 1 worker (threads={best['threads']}) = {ratios[mode]:.2f}x "
                  f"(per core used: {per_core:.2f}x; 2 workers got {two['cores_used']:.2f} of 2 cores — "
                  f"other jobs on this machine take the rest)")
    finally:
        server.stop()
    key = "query" if "query" in ratios else next(iter(ratios))
    ratio = ratios[key]
    print(f"RESULT eval_workers_speedup {ratio:.2f} goal >= {GOAL} {'PASS' if ratio >= GOAL else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
