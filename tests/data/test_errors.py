"""Bad datasets and bad downloads: one clear error naming the file and the episode."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla.data import DatasetError, LeRobotReader
from vla.data.libero import IMAGE_KEY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "download_libero.py"


@pytest.fixture
def copy(synthetic_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root)
    return root


def _edit_info(root: Path, **changes) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    info.update(changes)
    (root / "meta/info.json").write_text(json.dumps(info))


def test_missing_dataset_and_meta_files(tmp_path, copy):
    with pytest.raises(DatasetError, match="dataset directory not found"):
        LeRobotReader(tmp_path / "nowhere")
    (copy / "meta/tasks.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"tasks\.jsonl: file not found"):
        LeRobotReader(copy)


def test_missing_episodes_stats_in_v21(copy):
    (copy / "meta/episodes_stats.jsonl").unlink()
    with pytest.raises(DatasetError, match="episodes_stats.jsonl: file not found"):
        LeRobotReader(copy)


@pytest.mark.parametrize("changes", [
    {"codebase_version": "v3.0"},
    {"codebase_version": "v2.1", "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"},
])
def test_v30_is_refused_with_what_to_do(copy, changes):
    _edit_info(copy, **changes)
    with pytest.raises(DatasetError, match=r"v3\.0.*v2\.1 revision"):
        LeRobotReader(copy)


def test_unknown_version_and_bad_json(copy):
    _edit_info(copy, codebase_version="v1.6")
    with pytest.raises(DatasetError, match="unsupported codebase_version 'v1.6'"):
        LeRobotReader(copy)
    (copy / "meta/episodes.jsonl").write_text('{"episode_index": 0, "length": 7}\n{not json\n')
    _edit_info(copy, codebase_version="v2.1")
    with pytest.raises(DatasetError, match=r"episodes\.jsonl:2: invalid JSON"):
        LeRobotReader(copy)


def test_missing_parquet_names_file_and_episode(copy):
    (copy / "data/chunk-001/episode_000003.parquet").unlink()
    reader = LeRobotReader(copy)
    start, _ = reader.episode_range(3)
    with pytest.raises(DatasetError, match=r"episode_000003\.parquet \(episode 3\): parquet file not found"):
        reader[start]
    reader[0]  # other episodes still read


def test_corrupt_parquet(copy):
    (copy / "data/chunk-000/episode_000001.parquet").write_bytes(b"PAR1 not really")
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"episode_000001\.parquet \(episode 1\): cannot read parquet"):
        reader[reader.episode_range(1)[0]]


def test_missing_and_corrupt_video(copy):
    video = copy / f"videos/chunk-000/{IMAGE_KEY}/episode_000001.mp4"
    video.unlink()
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"episode_000001\.mp4 \(episode 1\): video file not found"):
        reader[reader.episode_range(1)[0]]
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"episode_000001\.mp4 \(episode 1\): cannot (open|decode)"):
        reader[reader.episode_range(1)[0]]


def test_truncated_video_reports_the_timestamp(copy, synthetic_root):
    """A video shorter than its parquet: the missing frame is named, not silently replaced."""
    from vla.data.synthetic import synthetic_episode
    from vla.data.video import encode_video

    video = copy / f"videos/chunk-000/{IMAGE_KEY}/episode_000000.mp4"
    encode_video(video, synthetic_episode(0, 7, 64)[IMAGE_KEY][:3], fps=10)
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"episode 0\).*no frame within .* of t=0\.6000s"):
        reader[6]


def _rewrite(root: Path, episode: int, chunk: int, fn) -> None:
    path = root / f"data/chunk-{chunk:03d}/episode_{episode:06d}.parquet"
    pq.write_table(fn(pq.read_table(path)), path)


def test_timestamp_gap(copy):
    def gap(table):
        ts = table.column("timestamp").to_numpy().copy()
        ts[4:] += 0.5
        return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(ts))
    _rewrite(copy, 2, 1, gap)
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"\(episode 2\): timestamp gap between frames 3 and 4"):
        reader[reader.episode_range(2)[0]]


def test_row_count_and_shape_mismatches(copy):
    _rewrite(copy, 0, 0, lambda t: t.slice(0, 5))
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"\(episode 0\): 5 rows, but meta/episodes.jsonl says length 7"):
        reader[0]
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [9]
    (copy / "meta/info.json").write_text(json.dumps(info))
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"column 'observation.state' holds 8 values per row; .* \[9\]"):
        reader[reader.episode_range(1)[0]]


def test_ragged_list_column(copy):
    def ragged(table):
        rows = [list(r) for r in table.column("action").to_pylist()]
        rows[2] = rows[2][:5]
        return table.set_column(table.schema.get_field_index("action"), "action", pa.array(rows))
    _rewrite(copy, 1, 0, ragged)
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"\(episode 1\): column 'action' has rows of different lengths"):
        reader[reader.episode_range(1)[0]]


def test_missing_column(copy):
    _rewrite(copy, 1, 0, lambda t: t.drop(["action"]))
    reader = LeRobotReader(copy)
    with pytest.raises(DatasetError, match=r"\(episode 1\): columns \['action'\] listed in info.json are missing"):
        reader[reader.episode_range(1)[0]]


def _load_script():
    spec = importlib.util.spec_from_file_location("download_libero", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_offline_is_one_line_and_nonzero(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repo-id", "Aiming1998/libero_10_no_noops_lerobotv2.1",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Hugging Face Hub" in lines[0]
    assert "Traceback" not in proc.stderr


def test_download_unknown_repo_and_bad_data(tmp_path, monkeypatch, capsys, synthetic_root):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    script = _load_script()

    def not_found(repo_id, **kwargs):
        response = SimpleNamespace(status_code=404, headers={}, request=None)  # what the hub client raises with
        raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for {repo_id}", response=response)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    assert script.main(["--repo-id", "nobody/nothing", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nobody/nothing' not found on the Hugging Face Hub" in err[0]

    def fake_download(repo_id, *, local_dir, **kwargs):  # a "download" that yields our dataset
        shutil.copytree(synthetic_root, local_dir, dirs_exist_ok=True)
        return local_dir
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert script.main(["--repo-id", "me/libero", "--out", str(tmp_path / "b")]) == 0
    assert "5 episodes, 41 frames" in capsys.readouterr().out
    (tmp_path / "b" / f"videos/chunk-001/{IMAGE_KEY}/episode_000002.mp4").write_bytes(b"garbage")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: kw["local_dir"])
    assert script.main(["--repo-id", "me/libero", "--out", str(tmp_path / "b")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "episode_000002.mp4 (episode 2)" in err[0]
