"""Exact resume, proven by SIGKILLing the real trainer process mid-training and mid-save."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from vla import checkpoint as ckpt

from .conftest import data_options, kill_tree, losses, run_train, train_cmd, train_env, wait_for

pytestmark = pytest.mark.timeout(300)

# 3 epochs x 6 steps, a checkpoint every 3 steps; the model draws noise from the global RNG
# every step, so equal losses after resume need the RNG restored, not only the weights.
OPTIONS = ["runner.max_epochs=3", "runner.save_step_interval=3", "runner.save_epoch_interval=3",
           "model.noise=True", "runner.lr_scheduler_type=linear", "runner.warmup_ratio=0.1"]
SLOW = ["model.step_delay_s=0.08"]  # ~0.2 s per step, so the kill lands where we aim
# The reference loads in-process; the killed and resumed runs use 2 DataLoader workers, so equal
# losses also prove the sample order survives a mid-epoch resume across worker processes.
WORKERS = ["train_dataloader.per_device_num_workers=2"]


@pytest.fixture(scope="module")
def reference(train_data, tmp_path_factory) -> dict[int, float]:
    work_dir = tmp_path_factory.mktemp("reference") / "wd"
    proc = run_train(work_dir, data_options(train_data) + OPTIONS)
    assert proc.returncode == 0, proc.stderr
    ref = losses(work_dir)
    assert sorted(ref) == list(range(1, 19))
    return ref


def _start(work_dir: Path, options: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(work_dir, options), cwd=REPO, env=train_env(**env),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)



def _kill(proc: subprocess.Popen) -> None:
    kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL


def _logged_steps(work_dir: Path) -> int:
    path = work_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _resume_and_compare(work_dir: Path, train_data, reference: dict[int, float], extra=()) -> None:
    proc = run_train(work_dir, data_options(train_data) + OPTIONS + list(extra), "--resume")
    assert proc.returncode == 0, proc.stderr
    resumed = losses(work_dir)  # raises if a step was logged twice
    assert sorted(resumed) == sorted(reference)  # no lost and no repeated steps
    # CPU, one thread, same seed: bit-identical losses, not merely close
    assert resumed == reference
    assert (work_dir / "latest").read_text().strip() == "checkpoint_epoch_3.pt"


def test_sigkill_mid_training_resumes_exactly(train_data, reference, tmp_path):
    work_dir = tmp_path / "wd"
    proc = _start(work_dir, data_options(train_data) + OPTIONS + SLOW + WORKERS, tmp_path / "log.txt")
    wait_for(lambda: _logged_steps(work_dir) >= 8, proc, "step 8")  # past the step-6 checkpoint
    _kill(proc)
    assert ckpt.read_latest(work_dir) == "checkpoint_step_6.pt"
    assert _logged_steps(work_dir) >= 8  # steps 7..8 were lost with the process and are redone
    _resume_and_compare(work_dir, train_data, reference, WORKERS)


def test_sigkill_mid_save_never_uses_the_half_written_checkpoint(train_data, reference, tmp_path):
    work_dir, log = tmp_path / "wd", tmp_path / "log.txt"
    proc = _start(work_dir, data_options(train_data) + OPTIONS, log,
                  VLA_TEST_PAUSE_BEFORE_COMMIT="checkpoint_step_9.pt:60")
    wait_for(lambda: "test pause before commit of checkpoint_step_9.pt" in log.read_text(), proc,
              "the step-9 save")
    _kill(proc)
    # weights and state files of step 9 are on disk, but no manifest and `latest` still says step 6
    assert (work_dir / "checkpoint_step_9.pt").exists()
    assert (work_dir / "train_state/checkpoint_step_9/optimizer.pt").exists()
    assert not (work_dir / "train_state/checkpoint_step_9/manifest.json").exists()
    assert ckpt.read_latest(work_dir) == "checkpoint_step_6.pt"
    assert ckpt.find_resumable(work_dir).step == 6
    _resume_and_compare(work_dir, train_data, reference)


def test_resume_without_checkpoint_starts_fresh(train_data, tmp_path):
    work_dir = tmp_path / "wd"
    proc = run_train(work_dir, data_options(train_data) + ["runner.max_epochs=1"], "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "no complete checkpoint" in proc.stderr
    assert sorted(losses(work_dir)) == list(range(1, 7))


def _train_sh_popen(work_dir: Path, options: list[str], log: Path, port: int, *extra: str) -> subprocess.Popen:
    env = train_env(MLP_WORKER_GPU="2", MLP_WORKER_0_PORT=str(port))
    return subprocess.Popen(["bash", str(REPO / "scripts/train.sh"), str(REPO / "tests/trainer/configs/tiny_seed.py"),
                             str(work_dir), *extra, "--cfg-options", *options], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_two_process_run_killed_and_resumed_matches_uninterrupted(train_data, tmp_path):
    """torchrun with 2 gloo ranks: SIGKILL the whole process group mid-epoch, resume with 2 ranks.
    Every rank restores its own RNG stream, so the per-rank noise continues exactly."""
    from tests.conftest import free_port

    options = data_options(train_data) + OPTIONS
    ref_dir = tmp_path / "ref"
    ref = _train_sh_popen(ref_dir, options, tmp_path / "ref.txt", free_port())
    assert ref.wait(timeout=240) == 0, (tmp_path / "ref.txt").read_text()[-3000:]

    work_dir = tmp_path / "wd"
    proc = _train_sh_popen(work_dir, options + SLOW, tmp_path / "kill.txt", free_port())
    wait_for(lambda: _logged_steps(work_dir) >= 5, proc, "step 5", timeout=180)  # past the step-3 checkpoint
    _kill(proc)
    assert ckpt.find_resumable(work_dir).step == 3
    resumed = _train_sh_popen(work_dir, options, tmp_path / "resume.txt", free_port(), "--resume")
    assert resumed.wait(timeout=240) == 0, (tmp_path / "resume.txt").read_text()[-3000:]
    assert losses(work_dir) == losses(ref_dir)
