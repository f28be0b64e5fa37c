"""End-to-end fixtures: one small dataset recorded from LIBERO by the demo itself, shared by the
three model families, and a helper that runs `python -m demo` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, libero_missing, skip_or_fail

# Small: 1 expert demonstration of each of 2 libero_object tasks, cameras at 64x64; 3 training steps;
# evaluation 1 trial per task with a 10-step budget (one or two queries, by the config's chunk).
TASKS = "0,1"
RECORD = ["--suite", "libero_object", "--tasks", TASKS, "--episodes-per-task", "1", "--image-size", "64"]
TRAIN_STEPS, EVAL_MAX_STEPS = 3, 10
FAMILY_ARGS = ["--train-steps", str(TRAIN_STEPS), "--trials", "1", "--eval-max-steps", str(EVAL_MAX_STEPS),
               "--workers", "2", "--video", "none"]


def demo_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "DEMO_CONFIG"):
        env.pop(k, None)
    return env


def run_demo(root: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "demo", "--root", str(root), *RECORD, *args],
                          cwd=REPO, env=demo_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """ROOT with data/ (recorded from LIBERO) and tokenizer/, made by the demo's own first two steps."""
    reason = libero_missing()
    if reason:
        skip_or_fail(reason)
    root = tmp_path_factory.mktemp("e2e") / "demo"
    proc = run_demo(root, "--stop-after", "tokenizer", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


_RUNS: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}


def family_run(root: Path, family: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Train + evaluate one family through the demo (once per session); (work dir, the process)."""
    if family not in _RUNS:
        proc = run_demo(root, "--config", family, *FAMILY_ARGS)
        work_dir = root if family == "pi0" else root.with_name(f"{root.name}_{family}")
        _RUNS[family] = (work_dir, proc)
    return _RUNS[family]
