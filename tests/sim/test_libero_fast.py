"""Real LIBERO, short: a whole torch-free episode over a real socket, init states, render-on-query.

These are the proof that the simulator is installed and driven right; each runs in well under
a minute here (env creation is 6-10 s of it).
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.sim.conftest import demo, no_torch_env, replay_key, server_url, sim_client_cmd, start_policy_server

pytestmark = pytest.mark.libero


def test_init_states_read_without_torch_match_torch_load(libero):
    torch = pytest.importorskip("torch")
    from sim_client.suites import get_tasks, load_init_states

    task = get_tasks("libero_10")[0]
    ours = load_init_states(task.init_states_file)
    ref = torch.load(task.init_states_file, weights_only=False)
    assert ours.shape == (50, ref.shape[1]) and ours.dtype == ref.dtype
    assert np.array_equal(ours, ref)


def test_suites_and_unknown_suite_message(libero):
    from sim_client.suites import get_tasks, suite_names

    assert {"libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"} <= set(suite_names())
    assert len(get_tasks("libero_10")) == 10 and len(get_tasks("libero_90")) == 90
    assert get_tasks("libero_10")[0].language == "put both the alphabet soup and the tomato sauce in the basket"
    out = subprocess.run(sim_client_cmd("--suite", "libero_11", "--server", "grpc://127.0.0.1:1", "--out", "/tmp/x"),
                         capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert out.returncode == 1
    assert "unknown LIBERO suite 'libero_11'" in out.stderr and "libero_spatial" in out.stderr


def test_torch_free_replay_episode_over_grpc_succeeds(libero, tmp_path):
    """The CLI, with `import torch` failing in it and its workers, runs a real episode against a
    scripted replay server over gRPC and measures success (the no-op twin in test_libero_episodes fails)."""
    d = demo()
    server = start_policy_server("replay", chunk_length=10, sequences={replay_key(d): d["actions"]})
    try:
        out = subprocess.run(
            sim_client_cmd("--suite", d["suite"], "--tasks", str(d["task_id"]), "--trials", "1", "--max-steps", "80",
                           "--server", server_url(server, "grpc"), "--out", str(tmp_path),
                           "--renderer", libero, "--no-progress"),
            capture_output=True, text=True, timeout=300, env=no_torch_env())
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    ep = lines[0]
    assert ep["error"] is None, ep.get("traceback")
    assert (ep["suite"], ep["task_id"], ep["trial"], ep["seed"]) == (d["suite"], d["task_id"], 0, 7)
    assert ep["task"] == "close the top drawer of the cabinet"
    assert ep["success"] is True and ep["steps"] == len(d["actions"]) and ep["queries"] == 5
    assert ep["model_version"] == "scripted-replay-1" and ep["latency_ms"] > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["renderer"] == libero and summary["overall"]["successes"] == 1
    assert summary["overall"]["errors"] == 0 and summary["complete"] is True
    assert (tmp_path / "success_by_task.png").stat().st_size > 1000
    assert "1/1" in out.stdout


def _drive(env, init_state, actions, wait, chunk, query_cams):
    """Step `env` like an episode does; returns per-step states and the images at each query."""
    states, sent = [], []
    obs = env.reset(7, init_state, render=False)
    for t in range(wait):
        obs, _ = env.step([0.0] * 6 + [-1.0], render=query_cams if t == wait - 1 else False)
        states.append(env.state())
    for i, a in enumerate(actions):
        if i % chunk == 0:
            sent.append({k: obs[k].copy() for k in query_cams})
        obs, _ = env.step(a, render=query_cams if (i + 1) % chunk == 0 else False)
        states.append(env.state())
    return states, sent


def test_render_on_query_is_equivalent(libero):
    """Same task, init state and actions: states identical every step, sent images bit-identical."""
    from sim_client.env import LiberoEnv
    from sim_client.suites import get_tasks, load_init_states

    task = get_tasks("libero_10")[0]
    init = load_init_states(task.init_states_file)[3]
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-0.6, 0.6, (24, 6)), np.sign(rng.uniform(-1, 1, (24, 1)))], axis=1)
    cams = ("agentview_image", "robot0_eye_in_hand_image")
    results = {}
    for mode in ("every", "query"):
        env = LiberoEnv(task, render=mode)
        try:
            results[mode] = _drive(env, init, actions, wait=3, chunk=8, query_cams=cams)
            results[mode + "_renders"] = env.renders
        finally:
            env.close()
    (s_every, i_every), (s_query, i_query) = results["every"], results["query"]
    assert len(s_every) == len(s_query) == 27
    for t, (a, b) in enumerate(zip(s_every, s_query)):
        assert np.array_equal(a, b), f"sim state differs at step {t}"
    assert len(i_every) == len(i_query) == 3
    for q, (a, b) in enumerate(zip(i_every, i_query)):
        for k in cams:
            assert a[k].dtype == np.uint8 and a[k].std() > 1, f"query {q} {k}: blank frame"
            assert np.array_equal(a[k], b[k]), f"query {q}: {k} differs"
    # Render-on-query really skipped frames: the last warm-up step and the 3 chunk ends, 2 cameras
    # each, nothing at construction or reset (27 steps rendered in the other mode).
    assert results["query_renders"] == 8
    # And the robot moved, so the comparison was not between two still scenes.
    assert not np.array_equal(s_query[3], s_query[-1])


def test_unreachable_server_is_one_clear_line(libero, tmp_path):
    from tests.conftest import free_port

    out = subprocess.run(sim_client_cmd("--suite", "libero_10", "--tasks", "0", "--trials", "1",
                                        "--server", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path),
                                        "--ready-timeout-s", "1"),
                         capture_output=True, text=True, timeout=120, env=no_torch_env())
    assert out.returncode == 1
    assert "not ready after 1s" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "results.jsonl").exists()
