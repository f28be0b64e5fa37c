"""Render-on-query speed-up of LIBERO evaluation: episodes per minute with render-on-query over
render-every-step (openpi's way), one worker, chunk 10, the same stand-in server (scripted
no-op over gRPC, so every episode runs its whole step budget), measured side by side in one
run. Goal: >= 3.5x. Also prints the libero_10 episodes per hour both ways.

    .venv/bin/python benchmarks/eval_render.py [--rounds 1] [--max-steps 300]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

GOAL = 3.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of one episode per mode")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--renderer", default="auto")
    args = p.parse_args()

    from benchmarks._serve_common import noop_grpc_server
    from sim_client.bench import libero_10_episodes_per_hour, measure
    from sim_client.render import choose_renderer

    server, url = noop_grpc_server(max_batch_size=1, max_queue_delay_ms=0.0)
    renderer, fps = choose_renderer(args.renderer)  # once, so both modes use the same backend
    print(f"renderer {renderer} (probe fps {fps})")
    # Alternate the modes (other processes share this machine: their load drifts over the run).
    runs = {"every": [], "query": []}
    try:
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(measure(url, workers=1, render=mode, trials=1, max_steps=args.max_steps,
                                          renderer=renderer))
    finally:
        server.stop()
    rows = {}
    for mode, rs in runs.items():
        span, eps, steps = sum(r["span_s"] for r in rs), sum(r["episodes"] for r in rs), sum(r["steps"] for r in rs)
        rows[mode] = {"episodes_per_min": 60 * eps / span, "steps_per_s": steps / span,
                      "cores_used": sum(r["cores_used"] * r["span_s"] for r in rs) / span}
        print(f"render={mode:<6} {eps} episodes x {args.max_steps} steps: {rows[mode]['episodes_per_min']:6.2f} "
              f"episodes/min, {rows[mode]['steps_per_s']:6.1f} steps/s ({rows[mode]['cores_used']:.2f} cores used) "
              f"-> libero_10 (530 steps) "
              f"{libero_10_episodes_per_hour(rows[mode]['steps_per_s']):6.1f} episodes/hour per worker")
    ratio = rows["query"]["episodes_per_min"] / rows["every"]["episodes_per_min"]
    print(f"RESULT eval_render_on_query_speedup {ratio:.2f} goal >= {GOAL} {'PASS' if ratio >= GOAL else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
