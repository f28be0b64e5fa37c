"""`make demo`: record -> tokenizer -> train -> serve + evaluate -> report, on a dataset it records itself.

    python -m demo [--config pi0|pi05|gr00t|CONFIG.py] [--root work_dirs/demo] [--suite libero_object]
                   [--tasks 0] [--episodes-per-task 40] [--action-noise 0.3] [--train-steps 3000] [--trials 10]
                   [--eval-max-steps N] [--workers 2] [--video failures]

Steps and where they write:
  record     ROOT/data         scripted-expert demonstrations from the real simulator (sim_client.record),
                               from fresh placements, never the evaluation's initial states, with DART
                               noise on the executed actions (the stored ones are the expert's)
  tokenizer  ROOT/tokenizer    the tiny byte-level BPE tokenizer (vla.data.tiny_tokenizer)
  train      WORK_DIR          scripts/train.sh on the family's config, from scratch (statistics,
                               checkpoints, loss.png)
  eval       WORK_DIR/eval     scripts/eval.sh: policy_server on the last checkpoint + sim_client on the
                               tasks the dataset holds, the first --trials standard initial states of each
WORK_DIR is ROOT for π0 (the default) and ROOT_<family> for the others, which share ROOT's data.
Each step writes a marker (ROOT or WORK_DIR/.demo/<step>.json, atomically) only once it is
complete; a rerun skips marked steps and resumes unmarked ones (the recorder appends after the
last whole episode, the trainer resumes from `latest`, the sim client skips recorded episodes).
A marker records the step's parameters: asking for different ones names the directory to delete.
`DEMO_CONFIG` (environment) picks the model family when --config is not given.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from vla.errors import EXPECTED_ERRORS, VLAError, cli_error

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "pi0": "configs/pi0/pi0_paligemma_libero_object_small.py",
    "pi05": "configs/pi05/pi05_paligemma_libero_10_full_finetune_tiny.py",
    "gr00t": "configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py",
}
ALIASES = {"pi0.5": "pi05", "π0": "pi0", "π0.5": "pi05", "gr00t-n1.5": "gr00t", "groot": "gr00t"}
DEFAULT_ROOT = "work_dirs/demo"
DEFAULT_DATA_ROOT = "work_dirs/demo/data"        # what the demo configs name; replaced by ROOT/data
DEFAULT_TOKENIZER = "work_dirs/demo/tokenizer"


STEP_NAMES = ("record", "tokenizer", "train", "eval")


class DemoError(VLAError, RuntimeError):
    """A demo step that failed or cannot run as asked; the message says which and what to do."""


def resolve_config(name: str) -> tuple[str, Path]:
    """('pi0'|'pi05'|'gr00t'|stem, config path) from a family name or a config file."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in CONFIGS:
        return key, REPO / CONFIGS[key]
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.stem, path.resolve()
    raise DemoError(f"DEMO_CONFIG/--config {name!r}: choose one of {', '.join(CONFIGS)} or a config .py file")


def path_overrides(config: Path, data_root: Path, tokenizer: Path) -> list[str]:
    """--cfg-options pointing every dataset root and tokenizer path the config names at ours."""
    from vla.config import Config

    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "data_root_path" and isinstance(value, str):
                found.append(f"{path}={data_root}")
            elif key == "model_path" and value == DEFAULT_TOKENIZER:
                found.append(f"{path}={tokenizer}")
            else:
                walk(value, path)

    walk(Config.fromfile(config).to_plain(), "")
    if not any("data_root_path" in f for f in found):
        raise DemoError(f"{config}: no data_root_path found; the demo cannot point it at {data_root}")
    return found


def dataset_tasks(data_root: Path, suite: str) -> list[int]:
    """Ids of the `suite` tasks whose instruction the dataset at `data_root` holds: the tasks the
    policy was trained on, and so the ones the demo evaluates."""
    from sim_client.suites import get_tasks
    from vla.data.reader import LeRobotReader

    reader = LeRobotReader(data_root)
    try:
        texts = {reader.task(i) for i in range(reader.info["total_tasks"])}
    finally:
        reader.close()
    ids = [t.task_id for t in get_tasks(suite) if t.language in texts]
    unknown = texts - {t.language for t in get_tasks(suite)}
    if unknown or not ids:
        raise DemoError(f"{data_root}: its tasks {sorted(unknown or texts)} are not {suite} tasks; "
                        f"record it with --suite {suite} (or delete it)")
    return ids


class Steps:
    """Completion markers: ROOT/.demo/<step>.json, written atomically after the step finishes."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.timings: dict[str, float | None] = {}

    @staticmethod
    def marker(base: Path, step: str) -> Path:
        return base / ".demo" / f"{step}.json"

    def run(self, step: str, base: Path, params: dict[str, Any], fn: Callable[[], Any], redo_hint: Path) -> None:
        from demo.report import write_json

        marker = self.marker(base, step)
        params = json.loads(json.dumps(params, default=str))
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("params") == params:
                self.log(f"demo: {step}: complete ({marker}); skipped")
                self.timings[step] = None  # reported as "skipped"
                return
            raise DemoError(f"{step} was completed with other parameters ({marker}: {done.get('params')}); "
                            f"delete {redo_hint} to redo it with {params}")
        self.log(f"demo: {step} ...")
        t0 = time.perf_counter()
        fn()
        self.timings[step] = time.perf_counter() - t0
        write_json(marker, {"params": params, "seconds": round(self.timings[step], 1),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.log(f"demo: {step}: done in {self.timings[step]:.0f}s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    print(f"demo: $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    code = subprocess.call(cmd, cwd=REPO, env=env)
    if code != 0:
        raise DemoError(f"{what} failed (exit {code}): {' '.join(cmd)}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default=os.environ.get("DEMO_CONFIG", "pi0"),
                   help="pi0 (default), pi05, gr00t or a config file; default from $DEMO_CONFIG")
    p.add_argument("--root", default=DEFAULT_ROOT, help="demo directory (data, tokenizer, π0 work dir)")
    p.add_argument("--work-dir", help="training work dir (default: ROOT for pi0, ROOT_<family> otherwise)")
    p.add_argument("--suite", default="libero_object", help="LIBERO suite the expert records and the policy is scored on")
    p.add_argument("--tasks", default="0", help="task ids, e.g. 0,1 (default 0); 'all' for every task of the suite")
    p.add_argument("--episodes-per-task", type=int, default=40, help="expert demonstrations recorded per task")
    p.add_argument("--image-size", type=int, default=256, help="recorded camera resolution")
    p.add_argument("--action-noise", type=float, default=0.3,
                   help="DART noise on the expert's executed actions while recording (stored actions stay the "
                        "expert's); 0 records the expert's own path only")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--trials", type=int, default=10, help="standard initial states evaluated per task")
    p.add_argument("--eval-max-steps", type=int, help="step budget per evaluation episode (default: the suite's)")
    p.add_argument("--workers", type=int, default=2, help="simulator processes (record and eval; ~2.6 GB each)")
    p.add_argument("--video", choices=("none", "failures", "all"), default="failures")
    p.add_argument("--renderer", choices=("auto", "egl", "osmesa"), default="auto")
    p.add_argument("--stop-after", choices=STEP_NAMES, help="run the steps up to this one, then stop")
    return p.parse_args(argv)


def eval_arguments(args: argparse.Namespace, tasks: list[int]) -> list[str]:
    """sim_client flags of the eval step: the trained `tasks`, --trials standard initial states each."""
    out = ["--suite", args.suite, "--tasks", ",".join(map(str, tasks)), "--trials", str(args.trials),
           "--workers", str(args.workers), "--video", args.video, "--renderer", args.renderer]
    if args.eval_max_steps:
        out += ["--max-steps", str(args.eval_max_steps)]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()
    try:
        family, config = resolve_config(args.config)
        root = Path(args.root).resolve()
        work_dir = root if family == "pi0" else root.with_name(f"{root.name}_{family}")
        work_dir = Path(args.work_dir).resolve() if args.work_dir else work_dir
        data_root, tokenizer, eval_dir = root / "data", root / "tokenizer", work_dir / "eval"
        tasks = None if args.tasks == "all" else [int(t) for t in args.tasks.split(",") if t.strip()]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   VENV=os.environ.get("VENV", str(Path(sys.executable).parents[1])))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        if "MLP_WORKER_0_PORT" not in env:  # torchrun's default 29500 collides with any other run here
            env["MLP_WORKER_0_PORT"] = str(_free_port())
        steps = Steps(log)
        log(f"demo: {family} ({config.relative_to(REPO) if config.is_relative_to(REPO) else config}) "
            f"-> {work_dir}")

        def record() -> None:
            from sim_client.record import record_dataset

            record_dataset(data_root, suite=args.suite, tasks=tasks, episodes_per_task=args.episodes_per_task,
                           workers=args.workers, resolution=args.image_size, renderer=args.renderer,
                           action_noise=args.action_noise, log=log)

        steps.run("record", root, dict(suite=args.suite, tasks=tasks, episodes_per_task=args.episodes_per_task,
                                       recorder="expert", image_size=args.image_size, action_noise=args.action_noise),
                  record, data_root)
        if args.stop_after == "record":
            return 0

        def build_tokenizer() -> None:
            from vla.data.tiny_tokenizer import build_tiny_tokenizer_for_dataset

            build_tiny_tokenizer_for_dataset(tokenizer, data_root)

        steps.run("tokenizer", root, dict(data=str(data_root)), build_tokenizer, tokenizer)
        if args.stop_after == "tokenizer":
            return 0

        options = path_overrides(config, data_root, tokenizer) + [
            f"runner.max_steps={args.train_steps}", "runner.max_epochs=1000",
            f"runner.save_step_interval={max(1, args.train_steps // 2)}"]

        def train() -> None:
            resume = ["--resume"] if (work_dir / "latest").is_file() else []
            if resume:
                log(f"demo: train: resuming from {work_dir / 'latest'}")
            _run(["bash", str(REPO / "scripts/train.sh"), str(config), str(work_dir), *resume,
                  "--cfg-options", *options], env, "training")
            if not (work_dir / "latest").is_file():
                raise DemoError(f"training finished without writing {work_dir / 'latest'}")

        steps.run("train", work_dir, dict(config=str(config), options=options), train, work_dir)
        if args.stop_after == "train":
            return 0

        eval_args = eval_arguments(args, dataset_tasks(data_root, args.suite))

        def evaluate() -> None:
            _run(["bash", str(REPO / "scripts/eval.sh"), str(config), str(work_dir), *eval_args],
                 dict(env, EVAL_OUT=str(eval_dir)), "evaluation")

        steps.run("eval", work_dir, dict(args=eval_args, checkpoint=(work_dir / "latest").read_text().strip()),
                  evaluate, eval_dir)

        from demo.report import final_report

        timings = {**steps.timings, "total": time.perf_counter() - t_start}
        print(final_report(work_dir, eval_dir, data_root, timings), flush=True)
        return 0
    except EXPECTED_ERRORS as exc:   # a failed step, bad input (DemoError, a dataset or recorder error), the disk
        log(cli_error("demo", exc))
        return 1

