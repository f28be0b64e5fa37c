"""Real LIBERO episodes against real policy servers: transports, success vs failure, faults, resume.

Each test runs one or a few short episodes (libero_90 task 0, the scripted drawer demo); all
are marked slow because env creation alone is 6-10 s per worker here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from policy_server.scripted import NoopPolicy, ReplayPolicy
from sim_client.results import read_results
from sim_client.runner import EvalConfig, run_eval
from tests.sim.conftest import demo, no_torch_env, replay_key, server_url, sim_client_cmd, start_policy_server
from vla.wire.errors import ErrorCode, PolicyError

pytestmark = [pytest.mark.libero, pytest.mark.slow]


def cfg(d, **kw):
    base = dict(task_suite_name=d["suite"], tasks=[d["task_id"]], num_trials_per_task=1, max_steps=70,
                renderer=os.environ.get("MUJOCO_GL", "auto"), progress=False, retries=2)
    base.update(kw)
    return EvalConfig(**base)


def keys(lines):
    return sorted((x["suite"], x["task_id"], x["trial"]) for x in lines)


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_replay_succeeds_noop_fails(libero, tmp_path, transport):
    d = demo()
    replay = start_policy_server("replay", sequences={replay_key(d): d["actions"]})
    noop = start_policy_server("noop")
    try:
        ok = run_eval(cfg(d), server_url(replay, transport), tmp_path / "replay", log=lambda m: None)
        bad = run_eval(cfg(d), server_url(noop, transport), tmp_path / "noop", log=lambda m: None)
    finally:
        replay.stop()
        noop.stop()
    (r,), (n,) = read_results(tmp_path / "replay/results.jsonl"), read_results(tmp_path / "noop/results.jsonl")
    assert r["error"] is None and r["success"] is True and r["steps"] == len(d["actions"])
    assert n["error"] is None and n["success"] is False and n["steps"] == 70
    assert ok.summary["overall"]["rate"] == 1.0 and bad.summary["overall"]["rate"] == 0.0


def test_render_modes_give_the_same_results(libero, tmp_path):
    """Full episodes, deterministic stand-in: render-every-step and render-on-query agree line for line."""
    d = demo()
    server = start_policy_server("replay", sequences={replay_key(d): d["actions"]})
    try:
        for mode in ("every", "query"):
            run_eval(cfg(d, render=mode, video="all"), server_url(server, "grpc"), tmp_path / mode,
                     log=lambda m: None)
    finally:
        server.stop()
    (e,), (q,) = read_results(tmp_path / "every/results.jsonl"), read_results(tmp_path / "query/results.jsonl")
    assert (e["success"], e["steps"], e["queries"]) == (q["success"], q["steps"], q["queries"]) == (True, 50, 5)
    assert (tmp_path / "query" / q["video"]).stat().st_size > 10_000
    assert "success" in q["video"] and d["suite"] in q["video"]


def test_video_failures_replays_the_failed_episode(libero, tmp_path):
    d = demo()
    server = start_policy_server("noop")
    try:
        run_eval(cfg(d, max_steps=15, video="failures"), server_url(server, "grpc"), tmp_path, log=lambda m: None)
    finally:
        server.stop()
    (line,) = read_results(tmp_path / "results.jsonl")
    import av

    with av.open(str(tmp_path / line["video"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert "failure" in line["video"]
    assert len(frames) == 10 + 15 and frames[0].shape == (256, 512, 3)  # warm-up + steps, both cameras


class _Watched(ReplayPolicy):
    """Replay that tells the test when the first request of the run has arrived."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.first = threading.Event()
        self.calls = 0

    def infer_batch(self, observations):
        if any("replay_key" in o for o in observations):  # not the server's own warm-up
            self.calls += 1
            self.first.set()
        return super().infer_batch(observations)


def test_worker_killed_mid_episode_is_replaced_and_retried(libero, tmp_path):
    import multiprocessing

    d = demo()
    policy = _Watched(chunk_length=10, sequences={replay_key(d): d["actions"]})
    server = start_policy_server(policy=policy)
    killed = []

    def killer():
        if policy.first.wait(120):
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        result = run_eval(cfg(d), server_url(server, "grpc"), tmp_path, log=lambda m: None)
    finally:
        server.stop()
        t.join(5)
    assert killed, "no worker was running when the first request came"
    (line,) = read_results(tmp_path / "results.jsonl")
    assert line["error"] is None and line["success"] is True and line["attempts"] == 2
    assert line["pid"] not in killed
    assert result.stats["crashes"] == 1 and result.stats["workers_replaced"] == 1


def test_server_restart_mid_run_loses_nothing(libero, tmp_path):
    d = demo()
    policy = _Watched(chunk_length=10, sequences={replay_key(d): d["actions"], "*": d["actions"]})
    server = start_policy_server(policy=policy)
    ports = (server.grpc_port, server.http_port)
    restarted = {}

    def bounce():
        if policy.first.wait(120):
            server.stop(grace_s=0)
            time.sleep(3.0)
            restarted["server"] = start_policy_server("replay", grpc_port=ports[0], http_port=ports[1],
                                                      sequences={replay_key(d): d["actions"], "*": d["actions"]})

    t = threading.Thread(target=bounce, daemon=True)
    t.start()
    try:
        result = run_eval(cfg(d, num_trials_per_task=2), f"grpc://127.0.0.1:{ports[0]}", tmp_path,
                          log=lambda m: None)
    finally:
        t.join(60)
        server.stop()
        if "server" in restarted:
            restarted["server"].stop()
    assert "server" in restarted
    lines = read_results(tmp_path / "results.jsonl")
    assert keys(lines) == [(d["suite"], 0, 0), (d["suite"], 0, 1)]
    trial0 = next(x for x in lines if x["trial"] == 0)
    assert trial0["error"] is None and trial0["success"] is True  # the call retried through the restart
    assert result.summary["overall"]["errors"] == 0


class _Failing(NoopPolicy):
    """Answers warm-up (a failed warm-up would keep the server from ever being ready), then refuses
    every request with RESOURCE_EXHAUSTED."""

    warmed_up = False

    def warmup_observation(self):
        self.warmed_up = False
        return super().warmup_observation()

    def infer_batch(self, observations):
        if not self.warmed_up:
            return super().infer_batch(observations)
        return [PolicyError(ErrorCode.RESOURCE_EXHAUSTED, "queue full") for _ in observations]


def _start_failing():
    policy = _Failing(chunk_length=10)
    server = start_policy_server(policy=policy)
    policy.warmed_up = True   # start_policy_server returns once warm-up is done and the server is ready
    return server


def test_server_errors_are_counted_apart_never_as_failures(libero, tmp_path):
    """RESOURCE_EXHAUSTED says nothing about the policy: retried, recorded apart, out of the rate.
    (A server error that is the policy's, such as INTERNAL, is a failure: tests/sim/test_openpi_peer.py.)"""
    d = demo()
    server = _start_failing()
    try:
        result = run_eval(cfg(d, num_trials_per_task=2, retries=1, server_retries=0), server_url(server, "http"),
                          tmp_path, log=lambda m: None)
    finally:
        server.stop()
    lines = read_results(tmp_path / "results.jsonl")
    assert keys(lines) == [(d["suite"], 0, 0), (d["suite"], 0, 1)]
    for x in lines:
        assert x["success"] is False and "RESOURCE_EXHAUSTED" in x["error"] and x["attempts"] == 2
        assert x["failure"] is None
    o = result.summary["overall"]
    assert (o["errors"], o["failures"], o["successes"], o["rate"]) == (2, 0, 0, None)
    assert result.stats["retries"] == 2
    # A resume re-runs the errored episodes (the default; --keep-errors keeps them) and replaces their lines.
    server = start_policy_server("noop")
    try:
        kept = run_eval(cfg(d, num_trials_per_task=2, retries=0, keep_errors=True), server_url(server, "http"),
                        tmp_path, log=lambda m: None)
        assert kept.summary["rerun_errors"] == 0 and kept.summary["overall"]["errors"] == 2
        again = run_eval(cfg(d, num_trials_per_task=2, retries=0), server_url(server, "http"), tmp_path,
                         log=lambda m: None)
    finally:
        server.stop()
    lines = read_results(tmp_path / "results.jsonl")
    assert keys(lines) == [(d["suite"], 0, 0), (d["suite"], 0, 1)]      # exactly one line per episode
    assert all(x["error"] is None for x in lines)
    assert again.summary["rerun_errors"] == 2 and again.summary["overall"]["errors"] == 0


def test_request_over_the_size_limit_is_not_retried(libero, tmp_path):
    """A request over the server's --max-message-bytes (RESOURCE_EXHAUSTED, HTTP 413) can never
    succeed: neither the client's call retries nor the pool's episode retries send it again; the
    episode is recorded once with the error, apart from the policy's failures."""
    d = demo()
    server = start_policy_server("noop")
    server.service.config.max_message_bytes = 64_000   # a LIBERO request (two 256x256 frames) is ~0.4 MB
    sizes = []
    check = server.service.check_size
    server.service.check_size = lambda n: sizes.append(n) or check(n)
    try:
        result = run_eval(cfg(d, retries=2, server_retries=3), server_url(server, "http"), tmp_path,
                          log=lambda m: None)
    finally:
        server.stop()
    (line,) = read_results(tmp_path / "results.jsonl")
    assert "RESOURCE_EXHAUSTED" in line["error"] and "--max-message-bytes" in line["error"], line["error"]
    assert line["retryable"] is False and line["attempts"] == 1 and line["failure"] is None
    assert len(sizes) == 1 and sizes[0] > 64_000, f"the request over the limit was sent {len(sizes)} times"
    assert result.stats["retries"] == 0 and result.summary["overall"]["errors"] == 1


def test_interrupted_run_resumes_without_loss_or_duplicates(libero, tmp_path):
    d = demo()
    server = start_policy_server("noop")
    args = sim_client_cmd("--suite", d["suite"], "--tasks", "0", "--trials", "3", "--max-steps", "10",
                          "--num-steps-wait", "2", "--server", server_url(server, "grpc"), "--out", str(tmp_path),
                          "--renderer", libero, "--no-progress")
    results = tmp_path / "results.jsonl"
    try:
        proc = subprocess.Popen(args, env=no_torch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        first = read_results(results)
        assert proc.returncode == 130, err
        assert 1 <= len(first) < 3 and results.read_text().endswith("\n")
        again = subprocess.run(args, env=no_torch_env(), capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    lines = read_results(results)
    assert keys(lines) == [(d["suite"], 0, k) for k in range(3)]
    assert lines[: len(first)] == first  # what was recorded is never rewritten
    assert np.all([x["error"] is None for x in lines])


def test_real_policy_server_tiny_pi0(libero, tmp_path):
    """The real server (tiny π0 work dir, random weights, its own eval transforms) drives an episode;
    the client stays torch-free and sends what the server's ServerInfo asks for."""
    from benchmarks._serve_common import make_tiny_pi0_work_dir
    from policy_server.engine import load_engine

    work_dir = make_tiny_pi0_work_dir(tmp_path / "work")
    server = start_policy_server(policy=load_engine(work_dir))
    info = None
    try:
        from vla.wire import connect

        with connect(server_url(server, "grpc"), token="") as c:
            info = c.server_info()
        out = subprocess.run(
            sim_client_cmd("--suite", "libero_10", "--tasks", "0", "--trials", "1", "--max-steps", "20",
                           "--server", server_url(server, "grpc"), "--out", str(tmp_path / "eval"),
                           "--renderer", libero, "--no-progress"),
            capture_output=True, text=True, timeout=600, env=no_torch_env())
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = read_results(tmp_path / "eval/results.jsonl")
    assert line["error"] is None, line.get("traceback")
    assert line["steps"] == 20 and line["success"] is False
    assert line["model_version"] == info.model_version and line["model_version"]
    expected_queries = -(-20 // min(10, info.chunk_length))
    assert line["queries"] == expected_queries


class _Stuck(NoopPolicy):
    """Never answers a real request until released (a hung model)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = threading.Event()

    def infer_batch(self, observations):
        if any(o.get("prompt") == "close the top drawer of the cabinet" for o in observations):
            self.release.wait(180)
        return super().infer_batch(observations)


def test_stuck_episode_is_killed_at_the_timeout_and_recorded_as_error(libero, tmp_path):
    d = demo()
    policy = _Stuck(chunk_length=10)
    server = start_policy_server(policy=policy)
    try:
        t0 = time.monotonic()
        result = run_eval(cfg(d, episode_timeout_s=30, retries=0, request_timeout_s=150),
                          server_url(server, "grpc"), tmp_path, log=lambda m: None)
        elapsed = time.monotonic() - t0
    finally:
        policy.release.set()
        server.stop()
    (line,) = read_results(tmp_path / "results.jsonl")
    assert line["success"] is False and "--episode-timeout-s" in line["error"]
    assert result.stats["timeouts"] == 1 and result.summary["overall"]["errors"] == 1
    assert result.summary["overall"]["failures"] == 0
    assert elapsed < 120  # killed, not waited out
