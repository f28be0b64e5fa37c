"""Results file, resume, shards, merge, Wilson table, request layout: no simulator needed."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sim_client.policy import RequestBuilder, resize_with_pad
from vla.wire.server_info import ServerInfo
from vla.libero import quat2axisangle
from sim_client.report import format_table, summarize, wilson, write_report
from sim_client.results import ResultsFile, merge, parse_shard, read_results, select_shard
from sim_client.video import video_name, write_mp4
from vla.wire import protocol


def line(task_id, trial, success=False, error=None, steps=10, suite="libero_10"):
    return {"suite": suite, "task_id": task_id, "task": f"task {task_id}", "trial": trial, "seed": 7,
            "success": success, "steps": steps, "error": error, "duration_s": 1.0, "video": None,
            "model_version": "v1", "latency_ms": 5.0}


def test_wilson_known_values():
    # Reference values (Wilson 1927; e.g. statsmodels proportion_confint(method="wilson")).
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_errors_are_counted_apart_from_failures(tmp_path):
    lines = [line(0, 0, True), line(0, 1, False), line(0, 2, error="server: UNAVAILABLE"), line(1, 0, True)]
    s = summarize(lines)
    t0 = s["tasks"][0]
    assert (t0["successes"], t0["failures"], t0["errors"]) == (1, 1, 1)
    assert t0["rate"] == 0.5  # the error is not in the denominator
    assert s["overall"]["rate"] == pytest.approx(2 / 3)
    assert s["overall"]["errors"] == 1
    table = format_table(s)
    assert "overall" in table and "2/3" in table
    summary = write_report(tmp_path, lines, {"renderer": "egl"})
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["renderer"] == "egl" and on_disk["overall"]["successes"] == 2 == summary["overall"]["successes"]
    png = (tmp_path / "success_by_task.png").read_bytes()
    # All-failure and all-success tasks put an interval end on the rate: the plot must still draw.
    write_report(tmp_path, [line(0, k) for k in range(3)] + [line(1, k, True) for k in range(7)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("reply, kind", [
    ({"actions": np.zeros((10, 7), np.float32)}, None),
    ({"actions": np.zeros((12, 7))}, None),
    ({"action": np.zeros((10, 7))}, "actions_missing"),
    ([1, 2], "actions_missing"),
    ({"actions": [[0.0] * 7, [0.0] * 3]}, "actions_shape"),
    ({"actions": np.zeros((10, 3), np.float32)}, "actions_shape"),
    ({"actions": np.zeros((10, 14), np.float32)}, "actions_shape"),
    ({"actions": np.zeros((7,), np.float32)}, "actions_shape"),
    ({"actions": np.zeros((10, 7), np.int64)}, "actions_dtype"),
    ({"actions": np.array([["x"] * 7] * 10)}, "actions_dtype"),
    ({"actions": np.zeros((4, 7), np.float32)}, "chunk_too_short"),
    ({"actions": np.full((10, 7), np.inf, np.float32)}, "actions_nonfinite"),
])
def test_action_contract(reply, kind):
    from sim_client.contract import PolicyFailure, check_actions

    if kind is None:
        out = check_actions(reply, min_rows=10)
        assert out.dtype == np.float64 and out.shape[1] == 7
    else:
        with pytest.raises(PolicyFailure) as exc:
            check_actions(reply, min_rows=10)
        assert exc.value.kind == kind and exc.value.reason.startswith(kind + ": ")


def test_which_server_errors_are_infrastructure():
    from sim_client.contract import from_server_error, is_infrastructure
    from vla.wire.errors import ErrorCode, PolicyError

    infra = {c for c in ErrorCode if is_infrastructure(PolicyError(c, "x"))}
    assert infra == {ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.DEADLINE_EXCEEDED,
                     ErrorCode.UNAUTHENTICATED}
    assert from_server_error(PolicyError(ErrorCode.INTERNAL, "boom")).reason == "server_INTERNAL: boom"


def test_failures_with_a_reason_count_in_the_rate_and_are_listed():
    lines = [line(0, 0, True), dict(line(0, 1), failure="actions_nonfinite: 1 NaN/inf values"),
             dict(line(0, 2), failure="actions_nonfinite: 2 NaN/inf values"),
             dict(line(0, 3), failure="server_INTERNAL: boom"), line(0, 4, error="server: UNAVAILABLE: draining")]
    s = summarize(lines)
    o = s["overall"]
    assert (o["successes"], o["failures"], o["errors"], o["reply_failures"]) == (1, 3, 1, 3)
    assert o["rate"] == 0.25
    assert s["failure_reasons"] == {"actions_nonfinite": 2, "server_INTERNAL": 1}
    assert s["error_reasons"] == {"server": 1}
    s["replan"] = {"steps": 5, "convention": "openpi's replan_steps=5"}
    table = format_table(s)
    assert "policy failures from invalid replies, counted in the rate (3): actions_nonfinite 2, server_INTERNAL 1" \
        in table
    assert "infrastructure errors, retried and not counted (1): server 1" in table
    assert "replanning: 5 actions executed per query (openpi's replan_steps=5)" in table


def test_resize_with_pad_is_openpis():
    from openpi_client import image_tools   # openpi's own, installed by `make install`
    rng = np.random.default_rng(0)
    for shape in ((256, 256, 3), (128, 200, 3), (224, 224, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(resize_with_pad(img, 224), image_tools.resize_with_pad(img, 224, 224))


def test_results_file_resume_and_torn_tail(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsFile(path) as rf:
        rf.append(line(0, 0, True))
        rf.append(line(0, 1))
        with pytest.raises(ValueError, match="already"):
            rf.append(line(0, 1))
    # A kill mid-write leaves a torn last line: reading ignores it, reopening cuts it off.
    with open(path, "a") as f:
        f.write('{"suite": "libero_10", "task_id": 0, "tri')
    assert len(read_results(path)) == 2
    with ResultsFile(path) as rf:
        assert rf.done == {("libero_10", 0, 0), ("libero_10", 0, 1)}
        rf.append(line(0, 2))
    lines = read_results(path)
    assert [x["trial"] for x in lines] == [0, 1, 2]
    assert path.read_text().count("\n") == 3


def test_errored_lines_are_dropped_atomically_for_a_rerun(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsFile(path) as rf:
        for rec in (line(0, 0, True), line(0, 1, error="server: UNAVAILABLE"), line(1, 0, error="worker crashed")):
            rf.append(rec)
    with ResultsFile(path) as rf:
        # only episodes of this run (shard) are re-run; task 1's error belongs to another shard here
        assert rf.drop_errors({("libero_10", 0, 0), ("libero_10", 0, 1)}) == 1
        assert ("libero_10", 0, 1) not in rf.done and ("libero_10", 1, 0) in rf.done
        assert [x["trial"] for x in read_results(path)] == [0, 0]     # rewritten before the rerun starts
        rf.append(line(0, 1, True))                                   # the append handle follows the new file
    lines = read_results(path)
    assert sorted((x["task_id"], x["trial"]) for x in lines) == [(0, 0), (0, 1), (1, 0)]   # one line each
    assert next(x for x in lines if x["trial"] == 1)["error"] is None
    assert not list(tmp_path.glob("*.tmp*"))
    with ResultsFile(path) as rf:
        assert rf.drop_errors({("libero_10", 0, 0), ("libero_10", 0, 1)}) == 0


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(line(0, 0)) + "\nnot json\n" + json.dumps(line(0, 1)) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2"):
        read_results(path)


def test_shards_partition_the_episodes():
    keys = [("libero_10", t, k) for t in range(3) for k in range(5)]
    shards = [select_shard(keys, (i, 4)) for i in range(4)]
    flat = [k for s in shards for k in s]
    assert sorted(flat) == sorted(keys) and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert select_shard(reversed(keys), (1, 4)) == shards[1]  # order of the input does not matter
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_merge_reports_duplicates_and_missing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, trials in ((a, [0, 1]), (b, [1, 2])):
        with ResultsFile(d / "results.jsonl") as rf:
            for k in trials:
                rf.append(line(0, k, success=k == 0))
    expected = [("libero_10", 0, k) for k in range(4)]
    report = merge(tmp_path / "out", [a, b], expected)
    assert report["episodes"] == 3
    assert report["duplicates"] == [["libero_10", 0, 1]]
    assert report["missing"] == [["libero_10", 0, 3]]
    assert [x["trial"] for x in read_results(tmp_path / "out" / "results.jsonl")] == [0, 1, 2]


def test_report_cli_reprints_table(tmp_path):
    with ResultsFile(tmp_path / "results.jsonl") as rf:
        rf.append(line(0, 0, True))
        rf.append(line(0, 1, False))
    out = subprocess.run([sys.executable, "-m", "sim_client.cli", "report", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1/2" in out.stdout and "50.0%" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "sim_client.cli", "report", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no results file" in missing.stderr


def _obs():
    rng = np.random.default_rng(0)
    return {"agentview_image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
            "robot0_eye_in_hand_image": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
            "robot0_eef_pos": np.array([0.1, 0.2, 0.3]), "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
            "robot0_gripper_qpos": np.array([0.04, -0.04])}


def _builder(info: dict, **kwargs) -> RequestBuilder:
    """A RequestBuilder for a server whose info dict (the wire form) is `info`."""
    return RequestBuilder(ServerInfo.from_dict(info), **kwargs)


def test_request_follows_the_server_declaration():
    obs = _obs()
    sim_inputs = [{"key": k} for k in (*protocol.SIM_KEYS, "prompt")]
    as_rendered = _builder({"inputs": sim_inputs, "image_orientation": "as_rendered"})
    req = as_rendered.build(obs, "do it")
    assert as_rendered.layout == "sim" and req["prompt"] == "do it"
    assert np.array_equal(req["agentview_image"], obs["agentview_image"])
    assert "replay_step" not in req
    rotated = _builder({"inputs": sim_inputs, "image_orientation": "rotated_180"}).build(obs, "x")
    assert np.array_equal(rotated["agentview_image"], obs["agentview_image"][::-1, ::-1])
    # Only the cameras the server asks for are rendered and sent.
    one_cam = _builder({"inputs": [{"key": "agentview_image"}, {"key": "robot0_eef_pos"},
                                         {"key": "robot0_eef_quat"}, {"key": "robot0_gripper_qpos"}]})
    assert one_cam.cameras == ("agentview_image",)
    assert "robot0_eye_in_hand_image" not in one_cam.build(obs, "x")
    # A state-only declaration (the scripted expert's) gets no camera at all.
    state_only = _builder({"inputs": [{"key": "robot0_eef_pos"}, {"key": "robot0_eef_quat"},
                                            {"key": "robot0_gripper_qpos"}]})
    assert state_only.layout == "sim" and state_only.cameras == ()
    assert not {"agentview_image", "robot0_eye_in_hand_image"} & set(state_only.build(obs, "x"))
    # openpi's server declares nothing: openpi's keys, rotated, resized, 8-d state.
    openpi = _builder({}, resize_size=224)
    req = openpi.build(obs, "x")
    assert openpi.layout == "openpi"
    assert req["observation/image"].shape == (224, 224, 3) and req["observation/state"].shape == (8,)
    assert np.array_equal(req["observation/image"], resize_with_pad(obs["agentview_image"][::-1, ::-1], 224))
    # A scripted replay server gets no step index from the client itself, only from the test hook.
    replay = _builder({"inputs": sim_inputs, "scripted": "replay"})
    assert "replay_step" not in replay.build(obs, "x")
    from tests.sim.replay import _ReplayBuilder

    hooked = _ReplayBuilder(replay, {"step": 30}, "libero_10/0/0").build(obs, "x")
    assert hooked["replay_step"] == 30 and hooked["replay_key"] == "libero_10/0/0" and hooked["prompt"] == "x"
    with pytest.raises(ValueError, match="image_orientation"):
        _builder({"inputs": sim_inputs, "image_orientation": "sideways"})


def test_quat2axisangle():
    assert np.allclose(quat2axisangle(np.array([0, 0, 0, 1.0])), 0)
    half = np.sqrt(0.5)
    assert np.allclose(quat2axisangle(np.array([0, 0, half, half])), [0, 0, np.pi / 2])


def test_video_names_are_unique_and_mp4_decodes(tmp_path):
    names = {video_name("libero_10", t, k, o, "put the bowl") for t in range(2) for k in range(2)
             for o in ("success", "failure")}
    assert len(names) == 8
    frames = [np.full((64, 128, 3), i * 20, np.uint8) for i in range(6)]
    path = write_mp4(tmp_path / names.pop(), frames)
    import av

    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (64, 128, 3)
    assert abs(int(decoded[5].mean()) - 100) <= 3


def test_no_working_renderer_names_the_packages(monkeypatch):
    from sim_client import render

    monkeypatch.setattr(render, "probe", lambda name, timeout_s=60.0: None)
    with pytest.raises(RuntimeError, match="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"):
        render.choose_renderer("auto")
    with pytest.raises(ValueError, match="--renderer"):
        render.choose_renderer("vulkan")
    env = render.worker_env("osmesa", threads=1)
    assert env["MUJOCO_GL"] == env["PYOPENGL_PLATFORM"] == "osmesa" and env["LP_NUM_THREADS"] == "1"


def test_eval_section_of_a_config_gives_the_defaults(tmp_path, repo_root):
    from sim_client.runner import EvalConfig

    seed_cfg = EvalConfig.from_config_file(str(repo_root / "configs/pi0/pi0_paligemma_libero_10_full_finetune_pytorch.py"))
    assert (seed_cfg.task_suite_name, seed_cfg.num_trials_per_task, seed_cfg.eval_chunk_size,
            seed_cfg.num_steps_wait, seed_cfg.seed, seed_cfg.resize_size) == ("libero_10", 50, 10, 10, 7, 224)
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text("eval = dict(type='LiberoEvalRunner', task_suite_name='libero_goal', eval_chunk_size=5,\n"
                        "            num_trials_per_task=3, num_steps_wait=4, seed=11, resize_size=128,\n"
                        "            dataset=dict(transforms=[]))\n")
    cfg = EvalConfig.from_config_file(str(cfg_file), num_trials_per_task=2, seed=None, workers=2)
    assert (cfg.task_suite_name, cfg.eval_chunk_size, cfg.num_trials_per_task, cfg.num_steps_wait, cfg.seed,
            cfg.resize_size, cfg.workers) == ("libero_goal", 5, 2, 4, 11, 128, 2)
    (tmp_path / "no_eval.py").write_text("model = dict(type='X')\n")
    with pytest.raises(ValueError, match="no `eval` section"):
        EvalConfig.from_config_file(str(tmp_path / "no_eval.py"))


def test_benchmark_throughput_counts_only_the_window_where_all_workers_run():
    from sim_client.bench import throughput

    def ep(pid, a, b, steps=100):
        return {"pid": pid, "started_at": a, "finished_at": b, "steps": steps, "error": None, "cpu_s": (b - a) / 2}

    # Worker 1 starts at 0, worker 2 only at 10 (slow env setup): the window is [10, 30].
    lines = [ep(1, 0, 10), ep(1, 10, 20), ep(1, 20, 30), ep(2, 10, 25), ep(2, 25, 40)]
    t = throughput(lines)
    assert t["window_s"] == 20
    # In [10, 30]: worker 1 did 2 episodes (200 steps), worker 2 one plus a third of one (133.3).
    assert t["steps_per_s"] == pytest.approx((200 + 100 + 100 * 5 / 15) / 20)
    assert t["episodes_per_min"] == pytest.approx(60 * t["steps_per_s"] / 100)
    assert t["cores_used"] == pytest.approx(1.0)  # two workers, each had half a core
    one = throughput([ep(1, 0, 10), ep(1, 10, 20)])
    assert one["window_s"] == 20 and one["episodes_per_min"] == pytest.approx(6.0)
    with pytest.raises(RuntimeError, match="infrastructure"):
        throughput([ep(1, 0, 10), {**ep(1, 10, 20), "error": "server: down"}])


def test_auto_renderer_is_egl_whenever_it_works_and_osmesa_only_as_fallback(monkeypatch):
    from sim_client import render

    # OSMesa winning the one-box probe must not make it the choice (it records LIBERO at about half EGL's rate).
    monkeypatch.setattr(render, "probe", lambda name, timeout_s=60.0: {"egl": 300.0, "osmesa": 900.0}[name])
    assert render.choose_renderer("auto") == ("egl", {"egl": 300.0, "osmesa": 900.0})
    monkeypatch.setattr(render, "probe", lambda name, timeout_s=60.0: {"egl": None, "osmesa": 900.0}[name])
    assert render.choose_renderer("auto")[0] == "osmesa"
    assert render.choose_renderer("osmesa")[0] == "osmesa"
