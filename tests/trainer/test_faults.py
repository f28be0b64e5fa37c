"""Faults a user can cause name themselves in one line, with no traceback, on real files: NaN in a
dataset, a corrupt video, a read-only work dir, a full disk during a save (a real tmpfs), truncated
and foreign checkpoints."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import MACHINE_LACKS
from vla import checkpoint as ckpt
from vla.data import LeRobotReader
from vla.data.errors import DatasetError
from vla.io import WriteError

from .conftest import data_options, run_train

pytestmark = pytest.mark.timeout(300)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = next((ln for ln in proc.stderr.splitlines() if "vla-train" in ln and ": " in ln), "")
    for needle in needles:
        assert needle in line, (needle, proc.stderr[-3000:])
    return line


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only); yields a function mount(size, readonly=False) -> path."""
    mounted = []

    def mount(size: str, readonly: bool = False) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True,
                             text=True)
        if out.returncode != 0:
            pytest.skip(f"{MACHINE_LACKS} permission to mount a tmpfs ({out.stderr.strip()})")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _copy_dataset(train_data, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(train_data["data"], root)
    return root


def _options(train_data, root: Path) -> list[str]:
    return [f"train_dataloader.dataset.datasets.data_root_path={root}", *data_options(train_data)[1:],
            "runner.max_epochs=1"]


def test_nan_in_observation_state_names_file_episode_frame_and_key(train_data, tmp_path):
    root = _copy_dataset(train_data, tmp_path)
    path = sorted(root.glob("data/chunk-000/episode_*.parquet"))[1]
    table = pq.read_table(path)
    state = np.array(table.column("observation.state").to_pylist(), dtype=np.float32)
    state[5, 4] = np.nan
    col = pa.array(list(state), type=table.schema.field("observation.state").type)
    pq.write_table(table.set_column(table.schema.get_field_index("observation.state"), "observation.state", col), path)

    with pytest.raises(DatasetError, match=r"episode 1\).*'observation.state'.*frame 5, dim 4"):
        LeRobotReader(root).read_columns(1, ["observation.state"])
    proc = run_train(tmp_path / "wd", _options(train_data, root))   # statistics are computed from the data
    _one_line_error(proc, str(path), "episode 1", "observation.state", "frame 5", "nan")


def test_corrupt_video_met_in_training_is_one_line(train_data, tmp_path):
    root = _copy_dataset(train_data, tmp_path)
    video = sorted(root.glob("videos/chunk-000/*/episode_000000.mp4"))[0]
    video.write_bytes(b"\x00" * 64 + os.urandom(2000))
    proc = run_train(tmp_path / "wd", _options(train_data, root))
    _one_line_error(proc, str(video))


def test_read_only_work_dir_is_one_line(train_data, tmp_path, tmpfs):
    work_dir = tmpfs("1m", readonly=True) / "wd"
    proc = run_train(work_dir, _options(train_data, Path(train_data["data"])))
    _one_line_error(proc, str(work_dir), "Read-only file system", "writable directory")


def test_full_disk_during_a_save_names_the_file_and_keeps_latest(train_data, tmp_path, tmpfs):
    # The toy model's checkpoint and train state take ~1 MB: 3 MB holds the first save, not all four.
    work_dir = tmpfs("3m") / "wd"
    proc = run_train(work_dir, _options(train_data, Path(train_data["data"])) +
                     ["runner.max_epochs=3", "runner.save_step_interval=2", "runner.keep_train_states=10"])
    line = _one_line_error(proc, "No space left on device", "MiB free", str(work_dir))
    assert "basic_ios" not in proc.stderr and "unexpected pos" not in proc.stderr, line
    latest = ckpt.read_latest(work_dir)
    assert latest is not None, "the first checkpoint fitted and must stay committed"
    assert ckpt.find_resumable(work_dir).weights.name == latest   # `latest` verifies against its manifest
    assert not [p for p in work_dir.rglob("*.tmp")], "a temp file was left behind"


def test_write_error_keeps_the_old_file(tmp_path, tmpfs):
    mnt = tmpfs("256k")
    path = mnt / "w.pt"
    ckpt.atomic_torch_save({"w": torch.zeros(8)}, path)
    before = path.read_bytes()
    with pytest.raises(WriteError, match=rf"cannot write {path}: No space left on device"):
        ckpt.atomic_torch_save({"w": torch.zeros(200_000)}, path)   # 800 kB > 256 kB
    assert path.read_bytes() == before and sorted(p.name for p in mnt.iterdir()) == ["w.pt"]


@pytest.mark.parametrize("content", ["truncated", "random", "pickled object"])
def test_bad_checkpoint_names_the_file_and_never_advises_weights_only_false(tmp_path, content):
    path = tmp_path / "checkpoint_step_1.pt"
    if content == "truncated":
        ckpt.atomic_torch_save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    else:
        torch.save({"w": torch.zeros(2), "opt": torch.optim.SGD}, path)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_weights(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value), err.value


def test_non_finite_loss_names_the_batch_samples(train_data, tmp_path):
    # A learning rate of 1e30 sends the weights to inf after the first step: the second loss is not finite.
    proc = run_train(tmp_path / "wd", _options(train_data, Path(train_data["data"])) + ["runner.learning_rate=1e30"])
    line = _one_line_error(proc, "loss is", "episode", "frame", str(train_data["data"]))
    assert "nan" in line or "inf" in line, line
