"""`vla-train CONFIG WORK_DIR [--resume] [--eval-after-train] [--cfg-options k=v ...]`.

One process per rank (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `scripts/train.sh` maps the
MLP_WORKER_* variables onto torchrun). The config's `runner` section names the runner
(`DDPTrainRunner` or `FSDPTrainRunner`). A config may list `custom_imports =
dict(imports=['pkg.module'])` (mmengine style) to register types defined outside the project.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vla-train", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="config file (.py as in FluxVLA, or a dumped config.json / config.yaml)")
    p.add_argument("work_dir", help="output directory: checkpoints, statistics, config, metrics")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--eval-after-train", action="store_true",
                   help="run scripts/eval.sh on the last checkpoint when training ends (rank 0)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. runner.max_epochs=2")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an expected error too (also LOG_LEVEL=DEBUG)")
    return p.parse_args(argv)


def _custom_imports(cfg) -> None:
    spec = cfg.get("custom_imports")
    if not spec:
        return
    modules = spec.get("imports", []) if isinstance(spec, dict) else list(spec)
    allow_failed = bool(spec.get("allow_failed_imports", False)) if isinstance(spec, dict) else False
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            if not allow_failed:
                raise


def run_eval(config: Path, checkpoint: Path) -> int:
    cmd = ["bash", str(REPO / "scripts" / "eval.sh"), str(config), str(checkpoint)]
    print(f"[vla-train] --eval-after-train: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def main(argv=None) -> int:
    args = parse_args(argv)
    # The trainer's own lines ("[vla-train] ...") at INFO, everyone else's warnings, all on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("trainer").setLevel(logging.INFO)
    from vla.config import Config, ConfigError, build
    from vla.errors import EXPECTED_ERRORS, cli_error

    import trainer.runners  # noqa: F401 - registers DDPTrainRunner, FSDPTrainRunner, VLAMetric
    from trainer.distributed import init_distributed, shutdown

    try:
        cfg = Config.fromfile(args.config)
        _custom_imports(cfg)   # first, so --cfg-options may add keywords of the types it registers
        if args.cfg_options:
            cfg.merge_options(args.cfg_options)
        if "runner" not in cfg:
            raise ConfigError(f"{args.config}: no runner section (e.g. runner = dict(type='DDPTrainRunner', ...))")
    except EXPECTED_ERRORS as exc:
        print(cli_error("vla-train", exc, debug=args.debug), file=sys.stderr)
        return 2
    dist_info = init_distributed()
    try:
        runner = build(cfg["runner"], source=cfg.filename, path="runner", config=cfg, work_dir=args.work_dir,
                       resume=args.resume, dist_info=dist_info)
        result = runner.run()
    except EXPECTED_ERRORS as exc:   # bad config, dataset, statistics, checkpoint, disk; anything else is a bug
        print(cli_error(f"vla-train (rank {dist_info.rank})", exc, debug=args.debug), file=sys.stderr)
        shutdown()
        return 2
    shutdown()
    if dist_info.is_main:
        print(f"[vla-train] done: step {result['step']}, latest {result['latest']} in {args.work_dir}",
              file=sys.stderr)
        if args.eval_after_train:
            work_dir = Path(args.work_dir)
            return run_eval(work_dir / "config.json", work_dir / result["latest"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
