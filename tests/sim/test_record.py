"""`sim_client record`: a LeRobot v2.1 dataset of successful scripted-expert episodes, torch-free."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.sim.conftest import no_torch_env, sim_client_cmd

pytestmark = pytest.mark.libero


@pytest.mark.slow
def test_recorded_dataset_is_lerobot_v21_of_successful_expert_episodes(libero, tmp_path):
    from vla.data import LeRobotReader, ParquetDataset
    from vla.data.libero import ACTION_KEY, IMAGE_KEY, STATE_KEY, WRIST_IMAGE_KEY, noop_mask

    root = tmp_path / "data"
    cmd = sim_client_cmd("record", "--suite", "libero_object", "--policy", "expert", "--tasks", "0",
                         "--episodes-per-task", "1", "--workers", "1", "--out", str(root), "--no-progress")
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=no_torch_env())
    assert first.returncode == 0, first.stderr[-3000:]
    episode0 = (root / "meta" / "episodes.jsonl").read_text().splitlines()[0]
    parquet0 = (root / "data" / "chunk-000" / "episode_000000.parquet").read_bytes()
    # A rerun asking for more resumes: episode 0 stays as it is, episode 1 is added after it.
    cmd[cmd.index("--episodes-per-task") + 1] = "2"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=no_torch_env())
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(1 already on disk)" in second.stderr, second.stderr[-2000:]
    assert (root / "data" / "chunk-000" / "episode_000000.parquet").read_bytes() == parquet0
    # The recording's parameters live beside the meta files; a resume asking for other ones is refused.
    assert json.loads((root / "meta" / "recording.json").read_text())["action_noise"] == 0.0
    cmd[cmd.index("--episodes-per-task") + 1] = "3"
    noisy = subprocess.run(cmd + ["--action-noise", "0.2"], capture_output=True, text=True, timeout=300,
                           env=no_torch_env())
    assert noisy.returncode != 0 and "action_noise=0.2 (recorded: 0.0)" in noisy.stderr, noisy.stderr[-2000:]
    assert json.loads((root / "meta" / "info.json").read_text())["total_episodes"] == 2

    reader = LeRobotReader(root)
    reader.validate()  # every parquet and both videos of every episode decode, first and last frame
    info = reader.info
    assert info["codebase_version"] == "v2.1" and info["robot_type"] == "panda" and info["fps"] == 10
    assert info["total_episodes"] == 2 and info["total_videos"] == 4
    for key in (IMAGE_KEY, WRIST_IMAGE_KEY):
        assert info["features"][key]["dtype"] == "video" and info["features"][key]["shape"] == [256, 256, 3]
    assert info["features"][STATE_KEY]["shape"] == [8] and info["features"][ACTION_KEY]["shape"] == [7]
    episodes = [json.loads(x) for x in (root / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert (root / "meta" / "episodes.jsonl").read_text().splitlines()[0] == episode0
    assert [e["tasks"] for e in episodes] == [["pick up the alphabet soup and place it in the basket"]] * 2

    for ep in episodes:
        table = pq.read_table(root / "data" / "chunk-000" / f"episode_{ep['episode_index']:06d}.parquet")
        actions = np.asarray(table[ACTION_KEY].to_pylist(), np.float32)
        states = np.asarray(table[STATE_KEY].to_pylist(), np.float32)
        assert len(actions) == ep["length"] < 280  # ended at success, within the evaluation budget
        assert not noop_mask(actions).any()
        assert np.abs(actions).max() <= 1.0 and set(np.unique(actions[:, 6])) == {-1.0, 1.0}
        assert actions[0, 6] == -1.0  # starts open, closes on the object, opens over the basket
        # State: eef position moved (pick to basket), axis-angle of a gripper pointing down, finger qpos.
        assert np.linalg.norm(states[-1, :3] - states[0, :3]) > 0.2
        assert np.all(np.abs(np.linalg.norm(states[:, 3:6], axis=1) - np.pi) < 0.5)
    # Fresh placements: the two episodes start from different layouts of the same objects.
    first_frames = [reader[0][IMAGE_KEY], reader[episodes[0]["length"]][IMAGE_KEY]]
    assert reader[episodes[0]["length"]]["frame_index"] == 0
    assert np.abs(first_frames[0].astype(int) - first_frames[1].astype(int)).mean() > 1.0

    ds = ParquetDataset(str(root), action_window_size=4, window_start_idx=0)
    assert len(ds) == info["total_frames"]
    sample = reader[0]
    assert sample[IMAGE_KEY].shape == (256, 256, 3) and sample["task"] == episodes[0]["tasks"][0]


def test_record_refuses_an_uncovered_task_and_an_evaluation_seed(libero, tmp_path):
    out = subprocess.run(sim_client_cmd("record", "--suite", "libero_goal", "--tasks", "0", "--episodes-per-task",
                                        "1", "--out", str(tmp_path / "d")),
                         capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert out.returncode == 1 and "libero_goal task 0 ('open the middle drawer of the cabinet')" in out.stderr
    assert not (tmp_path / "d").exists()
    seed = subprocess.run(sim_client_cmd("record", "--suite", "libero_object", "--tasks", "0", "--episodes-per-task",
                                         "1", "--seed", "7", "--out", str(tmp_path / "d")),
                          capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert seed.returncode == 1 and "disjoint reset seeds" in seed.stderr


def test_action_noise_perturbs_the_executed_arm_action_only():
    from sim_client.record import perturb

    action = np.array([1.0, -0.2, 0.0, 0.05, 0.0, -0.01, -1.0])
    assert perturb(action, 0.0, np.random.default_rng(0)) is action
    a = perturb(action, 0.3, np.random.default_rng(5))
    b = perturb(action, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)            # the episode's seed fixes the noise: reruns record the same
    assert a[6] == -1.0                             # the gripper command is never perturbed
    assert np.all(np.abs(a[:6]) <= 1.0) and not np.allclose(a[:6], action[:6])
    assert action[1] == -0.2                        # the stored (expert's) action is left as it was
    draws = np.stack([perturb(np.zeros(7), 0.3, np.random.default_rng(s))[:6] for s in range(400)])
    assert 0.25 < draws.std() < 0.35


def test_record_refuses_action_noise_outside_its_range(tmp_path):
    from sim_client.errors import SimClientError
    from sim_client.record import record_dataset

    for bad in (-0.1, 1.5):
        with pytest.raises(SimClientError, match="action_noise"):
            record_dataset(tmp_path / "d", suite="libero_object", tasks=[0], episodes_per_task=1, action_noise=bad)
    assert not (tmp_path / "d").exists()


def test_a_resume_must_repeat_the_recordings_parameters(tmp_path):
    from sim_client.errors import SimClientError
    from sim_client.record import RECORDING_FILE, check_recording, recording_params

    params = recording_params(suite="libero_object", seed=100000, action_noise=0.3, max_steps=None, resolution=256)
    (tmp_path / "meta").mkdir()
    check_recording(tmp_path, 0, params)                      # a new dataset: written
    assert json.loads((tmp_path / RECORDING_FILE).read_text()) == params
    check_recording(tmp_path, 5, dict(params))                # the same parameters: a resume
    with pytest.raises(SimClientError, match=r"action_noise=0\.0 \(recorded: 0\.3\), seed=150000 \(recorded: 100000\)"):
        check_recording(tmp_path, 5, dict(params, action_noise=0.0, seed=150000))
    (tmp_path / RECORDING_FILE).unlink()
    with pytest.raises(SimClientError, match="holds 5 episodes but no meta/recording.json"):
        check_recording(tmp_path, 5, params)


def test_only_a_successful_dry_run_is_replayed_and_a_replay_that_diverges_is_refused(libero):
    """The recorder simulates a placement without cameras first, then replays the executed actions
    with both cameras; the replay's states must repeat the dry run's exactly."""
    from sim_client.record import ReplayDiverged, _Recorder
    from sim_client.env import LiberoEnv
    from sim_client.expert_goals import plan_task
    from sim_client.suites import get_tasks

    task = get_tasks("libero_object")[0]
    rec = _Recorder("libero_object", 100000, 64, None, action_noise=0.3)
    env = LiberoEnv(task, resolution=64, render="query")
    try:
        # Placement 100000 fails under this noise (the expert recovers from 100001): no camera rendered.
        assert rec._dry_run(env, plan_task(task), 280, 100000) is None and env.renders == 0
        run = rec._dry_run(env, plan_task(task), 280, 100001)
        assert run is not None and env.renders == 0
        states, actions, executed = run
        agent, wrist = rec._replay(env, 100001, executed, states, 0)
        assert len(agent) == len(wrist) == len(actions) and agent[0].shape == (64, 64, 3)
        assert env.renders > 0
        tampered = [executed[0] + np.array([0.5, 0, 0, 0, 0, 0, 0])] + executed[1:]
        with pytest.raises(ReplayDiverged, match="state at frame 1 differs"):
            rec._replay(env, 100001, tampered, states, 0)
    finally:
        env.close()
