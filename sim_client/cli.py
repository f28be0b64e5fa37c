r"""`sim_client`: evaluate a policy server on LIBERO.

    sim_client --suite libero_10 --server grpc://127.0.0.1:50051 --out work_dirs/eval \
        [--tasks 0,3] [--trials N] [--workers N] [--shard i/n] [--max-steps N] \
        [--video none|failures|all] [--config CONFIG] [--chunk-size|--replan-steps N] \
        [--dimension camera,noise]      (robustness suites: --suite libero_plus, libero_pro, ...)
    sim_client --suite libero_object --policy expert --out work_dirs/expert   (the scripted expert)
    sim_client record --suite libero_object --policy expert --episodes-per-task N --out DATASET \
        [--tasks 0,5] [--workers N]                                          (expert demonstrations)
    sim_client merge OUT SHARD_DIR [SHARD_DIR ...]
    sim_client report OUT

Defaults are the `eval` section of FluxVLA's configs (50 trials, seed 7, chunk 10, 10 warm-up steps);
`--config` reads them from a config file's `eval` section, flags override. A rerun with the
same --out resumes, re-running the episodes recorded with an infrastructure error (--keep-errors
keeps them). Exit codes: 0 all episodes recorded, 1 bad arguments or setup,
3 some episodes ended with infrastructure errors, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sim_client.args import int_list, word_list


def build_parser() -> argparse.ArgumentParser:
    from sim_client.video import VIDEO_MODES

    p = argparse.ArgumentParser(prog="sim_client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", help="suite(s), comma-separated: libero_spatial|object|goal|10|90, the "
                                   "LIBERO-plus ones (libero_plus_spatial|object|goal|10, or libero_plus for all "
                                   "four) or LIBERO-PRO's (libero_pro_spatial_lan, ..., or libero_pro) "
                                   "(default: the config's, else libero_10)")
    p.add_argument("--server", help="grpc://host:50051, ws://host:8000 or http://host:8000")
    p.add_argument("--policy", choices=("expert",),
                   help="run an in-worker policy instead of a server: `expert`, the scripted expert")
    p.add_argument("--out", required=True, help="output directory (results.jsonl, summary.json, videos/)")
    p.add_argument("--config", help="config file whose `eval` section gives the defaults")
    p.add_argument("--tasks", type=int_list, help="task ids, e.g. 0,3 or 0-99 (default: all)")
    p.add_argument("--dimension", type=word_list, dest="dimensions",
                   help="robustness suites: only these perturbation dimensions, e.g. camera,noise")
    p.add_argument("--trials", type=int, help="trials per task (default 50; LIBERO-plus: 1)")
    p.add_argument("--workers", type=int, default=1, help="simulator processes (each ~2.6 GB RAM)")
    p.add_argument("--shard", help="i/n: run only shard i of n (0-based), for several machines")
    p.add_argument("--max-steps", type=int, help="step budget per episode (default: openpi's per suite)")
    p.add_argument("--video", choices=VIDEO_MODES, default="none")
    p.add_argument("--seed", type=int)
    p.add_argument("--chunk-size", "--replan-steps", dest="chunk_size", type=int,
                   help="actions executed per query: FluxVLA's eval_chunk_size (default 10) or openpi's "
                        "replan_steps (5 in examples/libero/main.py)")
    p.add_argument("--num-steps-wait", type=int)
    p.add_argument("--resize-size", type=int, help="image side for servers that take openpi's layout")
    p.add_argument("--render", choices=("query", "every"), default="query",
                   help="query: render cameras only for the steps the policy sees (default); every: each step")
    p.add_argument("--renderer", choices=("auto", "egl", "osmesa"), default="auto")
    p.add_argument("--episode-timeout-s", type=float, default=1800.0)
    p.add_argument("--retries", type=int, default=2, help="retries of an episode after an infrastructure error")
    p.add_argument("--keep-errors", action="store_true",
                   help="on resume, keep episodes recorded with an infrastructure error (by default they are re-run "
                        "and their lines replaced)")
    p.add_argument("--request-timeout-s", type=float, default=30.0, help="deadline of each policy call")
    p.add_argument("--ready-timeout-s", type=float, default=120.0, help="how long to wait for the server")
    p.add_argument("--no-progress", action="store_true")
    return p


def _config(args: argparse.Namespace):
    from sim_client.results import parse_shard
    from sim_client.runner import EvalConfig

    overrides = dict(task_suite_name=args.suite, num_trials_per_task=args.trials, seed=args.seed,
                     eval_chunk_size=args.chunk_size, num_steps_wait=args.num_steps_wait,
                     resize_size=args.resize_size, max_steps=args.max_steps, tasks=args.tasks,
                     dimensions=args.dimensions)
    common = dict(workers=args.workers, shard=parse_shard(args.shard), video=args.video, render=args.render,
                  renderer=args.renderer, episode_timeout_s=args.episode_timeout_s, retries=args.retries,
                  keep_errors=args.keep_errors,
                  request_timeout_s=args.request_timeout_s, ready_timeout_s=args.ready_timeout_s,
                  progress=not args.no_progress)
    if args.config:
        return EvalConfig.from_config_file(args.config, **overrides, **common)
    return EvalConfig(**{k: v for k, v in overrides.items() if v is not None}, **common)


def cmd_run(argv: list[str]) -> int:
    from sim_client.runner import run_eval
    from vla.errors import EXPECTED_ERRORS, cli_error
    from vla.wire.errors import PolicyError

    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.server is None) == (args.policy is None):
        parser.error("give exactly one of --server URL and --policy expert")
    try:
        cfg = _config(args)
        policy = args.server
        if args.policy == "expert":
            from sim_client.expert import ExpertPolicy
            from sim_client.expert_goals import check_tasks

            for suite in cfg.suites():
                check_tasks(suite, cfg.tasks)  # refuse uncovered tasks before any worker starts
            policy = ExpertPolicy
        result = run_eval(cfg, policy, args.out)
    except (*EXPECTED_ERRORS, PolicyError) as exc:   # bad input, disk or an unreachable server; else a bug
        print(cli_error("sim_client", exc), file=sys.stderr)
        return 1
    print(result.table)
    print(f"results: {result.out / 'results.jsonl'}  summary: {result.out / 'summary.json'}")
    if not result.complete:
        print("sim_client: interrupted; rerun the same command to finish", file=sys.stderr)
        return 130
    return 3 if result.summary["overall"]["errors"] else 0


def cmd_report(argv: list[str]) -> int:
    from sim_client.report import format_table, summarize
    from sim_client.results import read_results
    from vla.errors import EXPECTED_ERRORS, cli_error

    p = argparse.ArgumentParser(prog="sim_client report", description="re-print the table from results.jsonl")
    p.add_argument("out")
    args = p.parse_args(argv)
    path = Path(args.out) / "results.jsonl" if Path(args.out).is_dir() else Path(args.out)
    if not path.exists():
        print(f"sim_client: no results file at {path}", file=sys.stderr)
        return 1
    try:
        lines = read_results(path)
    except EXPECTED_ERRORS as exc:
        print(cli_error("sim_client", exc), file=sys.stderr)
        return 1
    print(format_table(summarize(lines)))
    return 0


def cmd_merge(argv: list[str]) -> int:
    from sim_client.report import format_table, write_report
    from sim_client.results import merge, read_results
    from sim_client.runner import EvalConfig, plan_episodes
    from vla.errors import EXPECTED_ERRORS, cli_error

    p = argparse.ArgumentParser(prog="sim_client merge", description="join shard results into OUT")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    p.add_argument("--suite", help="with --trials/--tasks: list the episodes no shard recorded")
    p.add_argument("--trials", type=int, help="as the run had (default 50; LIBERO-plus: 1)")
    p.add_argument("--tasks", type=int_list)
    p.add_argument("--dimension", type=word_list, dest="dimensions")
    args = p.parse_args(argv)
    expected = None
    try:
        if args.suite:
            cfg = EvalConfig(task_suite_name=args.suite, num_trials_per_task=args.trials, tasks=args.tasks,
                             dimensions=args.dimensions)
            expected = [(e["suite"], e["task_id"], e["trial"]) for e in plan_episodes(cfg)]
        report = merge(args.out, args.shards, expected)
    except EXPECTED_ERRORS as exc:
        print(cli_error("sim_client", exc), file=sys.stderr)
        return 1
    lines = read_results(report["out"])
    summary = write_report(args.out, lines, {"merged_from": report["sources"]})
    print(format_table(summary))
    print(json.dumps({k: report[k] for k in ("episodes", "duplicates", "missing")}))
    return 0 if not report["missing"] else 3


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Progress lines ("sim_client: ...") at INFO and other libraries' warnings go to stderr; the table to stdout.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("sim_client").setLevel(logging.INFO)
    if argv and argv[0] == "merge":
        return cmd_merge(argv[1:])
    if argv and argv[0] == "report":
        return cmd_report(argv[1:])
    if argv and argv[0] == "record":
        from sim_client.record import main as cmd_record

        return cmd_record(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return cmd_run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
