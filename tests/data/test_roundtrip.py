"""Writer -> reader round trip: same arrays, frames within video-compression error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla.data import LeRobotReader, LeRobotWriter
from vla.data.libero import IMAGE_KEY, LIBERO_10_TASKS, WRIST_IMAGE_KEY, libero_features
from vla.data.synthetic import synthetic_episode

from .conftest import IMAGE_SIZE, LENGTHS


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_reader_returns_what_the_writer_wrote(synthetic_root):
    reader = LeRobotReader(synthetic_root)
    assert len(reader) == sum(LENGTHS)
    assert reader.num_episodes == len(LENGTHS)
    assert reader.features["observation.state"]["shape"] == [8]
    assert reader.features["action"]["shape"] == [7]
    worst = np.inf
    index = 0
    for ep, length in enumerate(LENGTHS):
        expected = synthetic_episode(ep, length, IMAGE_SIZE)
        for row in range(length):
            item = reader[index]
            assert item["episode_index"] == ep and item["frame_index"] == row
            assert item["timestamp"] == pytest.approx(row / 10.0, abs=1e-6)
            assert item["task"] == LIBERO_10_TASKS[ep]
            np.testing.assert_array_equal(item["observation.state"], expected["observation.state"][row])
            np.testing.assert_array_equal(item["action"], expected["action"][row])
            for key in (IMAGE_KEY, WRIST_IMAGE_KEY):
                assert item[key].dtype == np.uint8 and item[key].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
                worst = min(worst, psnr(item[key], expected[key][row]))
            index += 1
    assert worst >= 35.0, f"worst frame PSNR {worst:.1f} dB"


def test_random_access_matches_sequential(synthetic_root):
    reader = LeRobotReader(synthetic_root)
    sequential = [reader[i][IMAGE_KEY] for i in range(len(reader))]
    fresh = LeRobotReader(synthetic_root, decoder_cache=1)
    order = np.random.default_rng(0).permutation(len(reader))
    for i in order:
        np.testing.assert_array_equal(fresh[int(i)][IMAGE_KEY], sequential[i])


def test_layout_and_meta_files(synthetic_root):
    info = json.loads((synthetic_root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1"
    assert info["total_episodes"] == 5 and info["total_frames"] == sum(LENGTHS)
    assert info["total_chunks"] == 3 and info["chunks_size"] == 2
    assert info["features"][IMAGE_KEY]["info"]["video.pix_fmt"] == "yuv420p"
    assert (synthetic_root / "data/chunk-002/episode_000004.parquet").is_file()
    assert (synthetic_root / f"videos/chunk-001/{WRIST_IMAGE_KEY}/episode_000003.mp4").is_file()
    episodes = [json.loads(line) for line in (synthetic_root / "meta/episodes.jsonl").read_text().splitlines()]
    assert [e["length"] for e in episodes] == LENGTHS
    table = pq.read_table(synthetic_root / "data/chunk-000/episode_000000.parquet")
    field_type = table.schema.field("observation.state").type
    assert pa.types.is_fixed_size_list(field_type) and field_type.list_size == 8
    stats = [json.loads(line) for line in (synthetic_root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    first = stats[0]["stats"]
    expected = synthetic_episode(0, LENGTHS[0], IMAGE_SIZE)
    np.testing.assert_allclose(first["action"]["std"], expected["action"].astype(np.float64).std(axis=0), atol=1e-7)
    assert first["action"]["count"] == [LENGTHS[0]]
    image_mean = np.asarray(first[IMAGE_KEY]["mean"])
    assert image_mean.shape == (3, 1, 1)
    np.testing.assert_allclose(image_mean[:, 0, 0], expected[IMAGE_KEY].reshape(-1, 3).mean(axis=0) / 255, atol=1e-9)


def test_variable_length_list_columns_are_read(tmp_path, synthetic_root):
    """Datasets written by older tools store vectors as variable `list` columns."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root)
    path = root / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path)
    for name in ("observation.state", "action"):
        col = table.column(name).combine_chunks()
        as_list = pa.ListArray.from_arrays(pa.array(np.arange(0, len(col) * col.type.list_size + 1,
                                                              col.type.list_size, dtype=np.int32)), col.flatten())
        table = table.set_column(table.schema.get_field_index(name), name, as_list)
    pq.write_table(table, path)
    reader = LeRobotReader(root)
    original = LeRobotReader(synthetic_root)
    start, stop = reader.episode_range(1)
    for i in range(start, stop):
        np.testing.assert_array_equal(reader[i]["observation.state"], original[i]["observation.state"])


def test_writer_appends_after_reopen_and_rejects_other_features(tmp_path):
    root = tmp_path / "ds"
    features = libero_features(32)
    with LeRobotWriter(root, fps=10, features=features) as w:
        w.add_episode(synthetic_episode(0, 4, 32), task="a")
    with LeRobotWriter(root, fps=10, features=features) as w:
        assert w.num_episodes == 1
        assert w.add_episode(synthetic_episode(1, 3, 32), task="b") == 1
    reader = LeRobotReader(root)
    assert len(reader) == 7 and reader[6]["task"] == "b" and reader[6]["index"] == 6
    with pytest.raises(ValueError, match="differ"):
        LeRobotWriter(root, fps=10, features=libero_features(32, state_dim=9))


def test_writer_rejects_bad_episode_data(tmp_path):
    w = LeRobotWriter(tmp_path / "ds", fps=10, features=libero_features(32))
    good = synthetic_episode(0, 4, 32)
    with pytest.raises(ValueError, match="missing features"):
        w.add_episode({k: v for k, v in good.items() if k != "action"}, task="t")
    with pytest.raises(ValueError, match="same non-zero number of frames"):
        w.add_episode({**good, "action": good["action"][:3]}, task="t")
    with pytest.raises(ValueError, match="observation.state"):
        w.add_episode({**good, "observation.state": good["observation.state"][:, :5]}, task="t")
    with pytest.raises(ValueError, match="uint8"):
        w.add_episode({**good, IMAGE_KEY: good[IMAGE_KEY].astype(np.float32)}, task="t")
    assert w.num_episodes == 0
    assert not list((tmp_path / "ds").rglob("*.parquet")) and not list((tmp_path / "ds").rglob("*.mp4"))


def test_a_second_writer_on_the_same_dataset_is_refused_until_the_first_closes(tmp_path):
    from vla.data.errors import DatasetError

    root = tmp_path / "ds"
    features = libero_features(32)
    first = LeRobotWriter(root, fps=10, features=features)
    first.add_episode(synthetic_episode(0, 4, 32), task="a")
    with pytest.raises(DatasetError, match=rf"pid {os.getpid()}.*is writing this dataset"):
        LeRobotWriter(root, fps=10, features=features)
    # Another process is refused too (flock is per open file, so this is not only an in-process check).
    code = ("import sys; from vla.data.writer import LeRobotWriter; from vla.data.libero import libero_features\n"
            "try:\n    LeRobotWriter(sys.argv[1], fps=10, features=libero_features(32))\n"
            "except Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert other.returncode == 3 and "DatasetError" in other.stdout and "another process" in other.stdout
    first.close()
    with LeRobotWriter(root, fps=10, features=features) as again:
        assert again.num_episodes == 1
    assert LeRobotReader(root).info["total_episodes"] == 1
