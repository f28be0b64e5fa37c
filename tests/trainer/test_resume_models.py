"""Exact resume on the real tiny models: a 2-process torchrun of tiny π0 (DDP + LoRA) and tiny
GR00T-N1.5 (FSDP2 full-shard) is SIGKILLed mid-step, resumed, SIGKILLed again in the middle of a
checkpoint save, resumed to the end, and its per-step losses equal an uninterrupted run's.

The two scenarios cross the axes the README promises (each model family, each parallelism, each kill
point) without running the full product of them."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from vla import checkpoint as ckpt

from .conftest import data_options, kill_tree, losses, train_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# 24 samples, global batch 4 -> 6 steps an epoch, 12 in all; a checkpoint every 3 steps.
STEPS = 12
OPTIONS = ["runner.max_epochs=2", "runner.save_step_interval=3",
           "runner.save_epoch_interval=2", "train_dataloader.batch_size=4",
           "train_dataloader.per_device_batch_size=2"]
SCENARIOS = {
    "pi0-ddp-lora": ("configs/pi0/pi0_paligemma_libero_10_lora_finetune_tiny.py",
                     ["runner.type=DDPTrainRunner"]),
    "gr00t-fsdp-full-shard": ("configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py",
                              ["runner.type=FSDPTrainRunner", "runner.sharding_strategy=full-shard"]),
}


def _start(config: str, work_dir: Path, options: list[str], log: Path, *extra: str, **env: str) -> subprocess.Popen:
    env = train_env(MLP_WORKER_GPU="2", MLP_WORKER_0_PORT=str(free_port()), **env)
    return subprocess.Popen(["bash", str(REPO / "scripts/train.sh"), str(REPO / config), str(work_dir), *extra,
                             "--cfg-options", *options], cwd=REPO, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]


def _steps_logged(work_dir: Path) -> int:
    path = work_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0



def _no_partial_files(work_dir: Path) -> None:
    leftovers = [p for p in work_dir.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert not leftovers, f"partial files left in the work dir: {leftovers}"


def _metrics_one_line_per_step(work_dir: Path) -> None:
    steps = [json.loads(line)["step"] for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), steps


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_mid_step_and_mid_save_resumes_to_the_same_losses(scenario, train_data, tmp_path):
    config, parallel = SCENARIOS[scenario]
    options = data_options(train_data)[:2] + OPTIONS + parallel
    if "gr00t" in scenario:   # its runner builds the tokenizer it names (the π0 configs name none there)
        options.append(f"runner.tokenizer.model_path={train_data['tokenizer']}")

    ref_dir, ref_log = tmp_path / "ref", tmp_path / "ref.txt"
    _finish(_start(config, ref_dir, options, ref_log), ref_log)
    reference = losses(ref_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    work_dir = tmp_path / "wd"
    # 1. SIGKILL while training, past the step-3 checkpoint: steps after it are lost and redone.
    log = tmp_path / "kill_step.txt"
    proc = _start(config, work_dir, options, log, VLA_TEST_STEP_DELAY_S="0.5")
    wait_for(lambda: _steps_logged(work_dir) >= 5, proc, "step 5", 300, log)
    kill_tree(proc)
    assert ckpt.find_resumable(work_dir).step in (3, 6)

    # 2. Resume, and SIGKILL in the middle of the step-9 save: files written, nothing sealed.
    log = tmp_path / "kill_save.txt"
    proc = _start(config, work_dir, options, log, "--resume", VLA_TEST_PAUSE_BEFORE_COMMIT="checkpoint_step_9.pt:120")
    wait_for(lambda: "test pause before commit of checkpoint_step_9.pt" in log.read_text(), proc,
             "the step-9 save", 300, log)
    kill_tree(proc)
    assert (work_dir / "checkpoint_step_9.pt").exists()
    assert not (work_dir / "train_state/checkpoint_step_9/manifest.json").exists()
    assert ckpt.find_resumable(work_dir).step == 6

    # 3. Resume to the end: the same losses, bit for bit, one metrics line per step, no partial file.
    log = tmp_path / "resume.txt"
    _finish(_start(config, work_dir, options, log, "--resume"), log)
    assert losses(work_dir) == reference
    _metrics_one_line_per_step(work_dir)
    _no_partial_files(work_dir)
    assert ckpt.read_latest(work_dir) == "checkpoint_epoch_2.pt"
