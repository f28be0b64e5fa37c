"""`scripts/train.sh` on torchrun with gloo: 2 processes match 1 process with the same global batch."""
from __future__ import annotations

import subprocess

import pytest
import torch

from tests.conftest import REPO, free_port

from .conftest import CONFIG, data_options, losses, run_train, train_env

pytestmark = pytest.mark.timeout(400)

# Equal up to float summation order (gradients all-reduced vs accumulated): stated tolerance.
RTOL, ATOL = 1e-5, 1e-6
ONE_EPOCH = ["runner.max_epochs=1"]


def _train_sh(work_dir, options, nproc: int, **env: str) -> subprocess.CompletedProcess:
    env = train_env(MLP_WORKER_GPU=str(nproc), MLP_WORKER_NUM="1", MLP_ROLE_INDEX="0",
                    MLP_WORKER_0_HOST="127.0.0.1", MLP_WORKER_0_PORT=str(free_port()), **env)
    return subprocess.run(["bash", str(REPO / "scripts/train.sh"), str(CONFIG), str(work_dir),
                           "--cfg-options", *options], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def single(train_data, tmp_path_factory):
    """1 process: per-device batch 2 x accumulation 2 = global batch 4."""
    work_dir = tmp_path_factory.mktemp("single") / "wd"
    proc = run_train(work_dir, data_options(train_data) + ONE_EPOCH)
    assert proc.returncode == 0, proc.stderr
    assert "accumulation 2" in proc.stderr
    return work_dir


def _assert_same_training(work_dir, reference) -> None:
    got, want = losses(work_dir), losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 7))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=RTOL, abs=ATOL), step
    a = torch.load(work_dir / "checkpoint_epoch_1.pt", weights_only=True)
    b = torch.load(reference / "checkpoint_epoch_1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("runner", ["DDPTrainRunner", "FSDPTrainRunner"])
def test_two_processes_match_one(train_data, single, tmp_path, runner):
    """2 processes x per-device batch 2 x accumulation 1 = the same global batch of 4, same samples."""
    work_dir = tmp_path / "wd"
    proc = _train_sh(work_dir, data_options(train_data) + ONE_EPOCH + [f"runner.type={runner}"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "backend=gloo" in proc.stderr and "--nproc_per_node=2" in proc.stderr
    assert "world 2" in proc.stderr and "accumulation 1" in proc.stderr
    assert (work_dir / "train_state/checkpoint_epoch_1/rng_rank1.pt").exists()  # every rank saved its RNG
    _assert_same_training(work_dir, single)


@pytest.mark.slow  # the 2-process FSDP test covers the same code; this adds the group-of-one path
def test_fsdp_one_process_matches_ddp(train_data, single, tmp_path):
    work_dir = tmp_path / "wd"
    proc = run_train(work_dir, data_options(train_data) + ONE_EPOCH + ["runner.type=FSDPTrainRunner"])
    assert proc.returncode == 0, proc.stderr
    _assert_same_training(work_dir, single)


def test_train_sh_maps_mlp_variables_onto_torchrun(tmp_path):
    env = train_env(MLP_WORKER_GPU="8", MLP_WORKER_NUM="2", MLP_ROLE_INDEX="1", MLP_WORKER_0_HOST="10.0.0.5",
                    MLP_WORKER_0_PORT="29555", VLA_TRAIN_DRY_RUN="1", VLA_DIST_BACKEND="gloo")
    proc = subprocess.run(["bash", str(REPO / "scripts/train.sh"), str(CONFIG), str(tmp_path / "wd"),
                           "--eval-after-train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split("\n")
    assert args[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc_per_node=8", "--node_rank=1", "--master_addr=10.0.0.5",
            "--master_port=29555"} <= set(args)
    tail = args[args.index("trainer.cli") - 1:]
    assert tail[:5] == ["-m", "trainer.cli", str(CONFIG), str(tmp_path / "wd"), "--eval-after-train"]


def test_train_sh_defaults_to_one_local_process(tmp_path):
    env = train_env(VLA_TRAIN_DRY_RUN="1")
    for var in ("MLP_WORKER_GPU", "MLP_WORKER_NUM", "MLP_ROLE_INDEX", "MLP_WORKER_0_HOST", "MLP_WORKER_0_PORT",
                "VLA_DIST_BACKEND"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(REPO / "scripts/train.sh"), str(CONFIG), str(tmp_path / "wd")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {"--nnodes=1", "--nproc_per_node=1", "--node_rank=0", "--master_addr=127.0.0.1"} <= set(
        proc.stdout.split("\n"))
    assert "backend=gloo" in proc.stderr  # no CUDA here


@pytest.mark.parametrize("var,value", [("MLP_WORKER_GPU", "two"), ("MLP_ROLE_INDEX", "3")])
def test_train_sh_rejects_bad_variables(tmp_path, var, value):
    env = train_env(VLA_TRAIN_DRY_RUN="1", MLP_WORKER_NUM="2", **{var: value})
    proc = subprocess.run(["bash", str(REPO / "scripts/train.sh"), str(CONFIG), str(tmp_path / "wd")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "MLP_" in proc.stderr


@pytest.mark.slow  # the 2-process tests already compare accumulation 2 (one process) with accumulation 1
def test_accumulation_matches_a_bigger_micro_batch(train_data, single, tmp_path):
    """per-device 4 x accumulation 1 == per-device 2 x accumulation 2 (the `single` run)."""
    work_dir = tmp_path / "wd"
    proc = run_train(work_dir, data_options(train_data) + ONE_EPOCH + ["train_dataloader.per_device_batch_size=4"])
    assert proc.returncode == 0, proc.stderr
    assert "accumulation 1" in proc.stderr
    _assert_same_training(work_dir, single)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["shard-grad-op", "no-shard"])
def test_two_process_fsdp_sharding_strategies_match_one(train_data, single, tmp_path, strategy):
    work_dir = tmp_path / "wd"
    proc = _train_sh(work_dir, data_options(train_data) + ONE_EPOCH + [
        "runner.type=FSDPTrainRunner", f"runner.sharding_strategy={strategy}"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_same_training(work_dir, single)
