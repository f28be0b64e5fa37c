"""Trainer test fixtures: one synthetic LIBERO dataset and tiny tokenizer per session, and helpers
that run the real `vla-train` entry point (in-process or as a subprocess)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys
from pathlib import Path

import pytest

from tests.conftest import HOOKS, REPO
from vla.data.synthetic import write_synthetic_libero_dataset
from vla.data.tiny_tokenizer import build_tiny_tokenizer

CONFIG = Path(__file__).parent / "configs" / "tiny_seed.py"
NUM_EPISODES, EPISODE_LENGTH, IMAGE_SIZE = 3, 8, 32  # 24 samples


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("trainer_data")
    root = write_synthetic_libero_dataset(base / "libero", num_episodes=NUM_EPISODES,
                                          episode_length=EPISODE_LENGTH, image_size=IMAGE_SIZE)
    tok = build_tiny_tokenizer(base / "tokenizer")
    return {"data": str(root), "tokenizer": str(tok)}


def data_options(train_data: dict[str, str]) -> list[str]:
    return [f"train_dataloader.dataset.datasets.data_root_path={train_data['data']}",
            f"train_dataloader.dataset.datasets.transforms.2.tokenizer.model_path={train_data['tokenizer']}",
            f"runner.tokenizer.model_path={train_data['tokenizer']}"]


def train_env(**extra: str) -> dict[str, str]:
    # tests/hooks first: its sitecustomize installs the VLA_TEST_* fault hooks a test asks for
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{HOOKS}{os.pathsep}{REPO}", **extra)
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    return env


def train_cmd(work_dir: Path, options: list[str], *extra: str, config: Path = CONFIG) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", str(config), str(work_dir), *extra, "--cfg-options", *options]


def run_train(work_dir: Path, options: list[str], *extra: str, timeout: float = 120, env=None,
              config: Path = CONFIG) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(work_dir, options, *extra, config=config), cwd=REPO, env=env or train_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc


def losses(work_dir: Path) -> dict[int, float]:
    out = {}
    for line in (Path(work_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["step"] not in out, f"step {record['step']} logged twice"
        out[record["step"]] = record["loss"]
    return out


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process below it, as a machine failure would. torchrun starts its
    workers in sessions of their own, so killing the launcher's process group leaves them running."""
    tree, pids, todo = _children(), [], [proc.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, []))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 90.0, log: Path | None = None) -> None:
    """Poll `predicate` until true; fail if the trainer exits first or `timeout` passes (with its log tail)."""
    tail = (lambda: f":\n{log.read_text()[-3000:]}") if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}{tail()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}{tail()}")
