"""`scripts/eval.sh` serves a checkpoint with the real policy server and evaluates it with the real sim
client; `vla-train --eval-after-train` runs it on the last checkpoint."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO, libero_missing, skip_or_fail

from .conftest import data_options, run_train, train_env

PI0_TINY = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py"
EVAL_SH = REPO / "scripts/eval.sh"


def _eval_sh(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(EVAL_SH), *map(str, args)], cwd=REPO, env=train_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _pgrep_server(work_dir) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"policy_server.cli --work-dir {work_dir}"], capture_output=True, text=True)
    return out.stdout.split()


def test_eval_sh_checks_its_arguments(tmp_path):
    proc = _eval_sh(PI0_TINY, tmp_path / "checkpoint_epoch_1.pt")
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    (tmp_path / "checkpoint_epoch_1.pt").write_bytes(b"x")
    proc = _eval_sh(PI0_TINY, tmp_path / "checkpoint_epoch_1.pt")
    assert proc.returncode == 2 and "config.json missing" in proc.stderr
    proc = _eval_sh(tmp_path / "nope.py", tmp_path / "checkpoint_epoch_1.pt")
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_eval_sh_reports_a_server_that_cannot_start_and_leaves_nothing_running(tmp_path):
    """A work dir whose checkpoint is garbage: the server exits, eval.sh says so and shows its log."""
    work_dir = tmp_path / "wd"
    work_dir.mkdir()
    (work_dir / "config.json").write_text(json.dumps({"model": {"type": "NoSuchModel"}}))
    (work_dir / "dataset_statistics.json").write_text("{}")
    (work_dir / "checkpoint_step_1.pt").write_bytes(b"not a checkpoint")
    proc = _eval_sh(PI0_TINY, work_dir / "checkpoint_step_1.pt", EVAL_READY_TIMEOUT_S="90")
    assert proc.returncode == 1, proc.stderr
    assert "policy_server exited before it was ready" in proc.stderr
    assert "last lines of" in proc.stderr and (work_dir / "eval_checkpoint_step_1" / "server.log").exists()
    assert not _pgrep_server(work_dir)


@pytest.mark.slow
@pytest.mark.libero
@pytest.mark.timeout(600)
def test_train_then_eval_after_train_on_libero(train_data, tmp_path):
    reason = libero_missing()
    if reason:
        skip_or_fail(reason)
    work_dir = tmp_path / "wd"
    options = data_options(train_data)[:2] + [
        "runner.max_steps=1", f"eval.dataset.transforms.2.tokenizer.model_path={train_data['tokenizer']}"]
    proc = run_train(work_dir, options, "--eval-after-train", config=PI0_TINY, timeout=540,
                     env=train_env(EVAL_ARGS="--tasks 0 --trials 1 --max-steps 20 --workers 1 --no-progress"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = work_dir / "eval_checkpoint_step_1"
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["task_id"] == 0 and lines[0]["error"] in (None, "")
    assert (out / "summary.json").exists() and (out / "server.log").exists()
    assert not _pgrep_server(work_dir)  # the server was stopped
