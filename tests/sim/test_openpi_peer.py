"""sim_client against openpi's own websocket server (`openpi-server` from PyPI), and honest accounting:
a reply that breaks the action contract is the policy's failure, counted in the rate with its reason;
only infrastructure errors are retried and kept out of it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sim_client.policy import LocalPolicy
from sim_client.results import read_results
from sim_client.runner import EvalConfig, run_eval
from tests.conftest import REPO, free_port
from tests.sim.conftest import DEMO, demo, no_torch_env, replay_key, sim_client_cmd
from vla.wire.errors import ErrorCode, PolicyError

pytestmark = pytest.mark.libero


class OpenpiPeer:
    """tests/sim/openpi_peer.py in a subprocess: openpi's WebsocketPolicyServer on a free port."""

    def __init__(self, tmp_path, mode: str, replan: int):
        self.port = free_port()
        self.log = tmp_path / f"openpi_{mode}_requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sim.openpi_peer", "--port", str(self.port), "--mode", mode,
             "--replay", str(DEMO), "--replan", str(replan), "--log", str(self.log)],
            cwd=REPO, env=no_torch_env(), stderr=subprocess.PIPE, text=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err or ""


def test_openpi_server_from_pypi_full_evaluation(libero, tmp_path):
    """openpi's server has no /readyz (a GET there gets 426): readiness is the websocket handshake
    plus its metadata frame. The CLI, torch-free, evaluates a scripted policy served by it with
    openpi's replanning chunk (5) and openpi's observation layout, and the replay succeeds."""
    d = demo()
    peer = OpenpiPeer(tmp_path, "replay", replan=5)
    try:
        out = subprocess.run(
            sim_client_cmd("--suite", d["suite"], "--tasks", str(d["task_id"]), "--trials", "1", "--max-steps", "80",
                           "--replan-steps", "5", "--server", peer.url, "--out", str(tmp_path / "eval"),
                           "--renderer", libero, "--no-progress", "--ready-timeout-s", "60"),
            capture_output=True, text=True, timeout=300, env=no_torch_env())
    finally:
        err = peer.stop()
    assert out.returncode == 0, out.stdout + out.stderr + err[-2000:]
    (ep,) = read_results(tmp_path / "eval/results.jsonl")
    assert ep["error"] is None and ep["failure"] is None, ep
    assert ep["success"] is True and ep["steps"] == len(d["actions"]) and ep["queries"] == len(d["actions"]) // 5
    reqs = peer.requests()
    assert len(reqs) == ep["queries"]
    for r in reqs:   # openpi's LIBERO layout, as examples/libero/main.py sends it
        assert r["observation/image"] == [[224, 224, 3], "|u1"] and r["observation/wrist_image"] == [[224, 224, 3], "|u1"]
        assert r["observation/state"][0] == [8] and r["prompt"] == "close the top drawer of the cabinet"
        assert "replay_step" not in r
    summary = json.loads((tmp_path / "eval/summary.json").read_text())
    assert summary["replan"] == {"steps": 5, "convention": "openpi's replan_steps=5", "server_chunk_length": None}
    assert summary["overall"]["successes"] == 1 and summary["overall"]["errors"] == 0
    assert "replanning: 5 actions executed per query (openpi's replan_steps=5)" in out.stdout


class _BadReplies(LocalPolicy):
    """The demo replayed, but trial k gets the k-th kind of reply (the trial is in `replay_key`)."""

    def infer(self, request):
        reply = super().infer(request)
        trial = int(request["replay_key"].rsplit("/", 1)[1])
        second_query = int(request.get("replay_step", 0)) > 0
        if trial == 1 and second_query:
            reply["actions"][3, 2] = np.nan
        elif trial == 2:
            reply["actions"] = reply["actions"][:, :3]
        elif trial == 3:
            reply["actions"] = reply["actions"].astype(np.int64)
        elif trial == 4:
            del reply["actions"]
        elif trial == 5:
            reply["actions"] = reply["actions"][:4]
        elif trial == 6:
            raise PolicyError(ErrorCode.INTERNAL, "model exploded")
        elif trial == 7:
            raise PolicyError(ErrorCode.UNAVAILABLE, "server draining")
        return reply


def _bad_replies() -> _BadReplies:
    d = demo()
    policy = _BadReplies(chunk_length=10, sequences={})
    policy.sequences = {f"{d['suite']}/{d['task_id']}/{t}": np.asarray(d["actions"], np.float32) for t in range(8)}
    return policy


@pytest.mark.slow
def test_contract_violations_are_policy_failures_and_only_infrastructure_is_an_error(libero, tmp_path):
    d = demo()
    cfg = EvalConfig(task_suite_name=d["suite"], tasks=[d["task_id"]], num_trials_per_task=8, max_steps=70,
                     renderer=libero, progress=False, retries=1)
    result = run_eval(cfg, _bad_replies, tmp_path, log=lambda m: None)
    lines = {x["trial"]: x for x in read_results(tmp_path / "results.jsonl")}
    assert sorted(lines) == list(range(8))
    assert lines[0]["success"] is True and lines[0]["failure"] is None and lines[0]["error"] is None
    want = {1: ("actions_nonfinite", 10), 2: ("actions_shape", 0), 3: ("actions_dtype", 0),
            4: ("actions_missing", 0), 5: ("chunk_too_short", 0), 6: ("server_INTERNAL", 0)}
    for trial, (kind, steps) in want.items():
        x = lines[trial]
        assert x["error"] is None and x["success"] is False, x
        assert x["failure"].startswith(kind + ":"), x["failure"]
        assert x["steps"] == steps and x["attempts"] == 1, x
    assert "model exploded" in lines[6]["failure"]
    assert lines[7]["success"] is False and lines[7]["failure"] is None
    assert "UNAVAILABLE" in lines[7]["error"] and lines[7]["attempts"] == 2
    o = result.summary["overall"]
    assert (o["successes"], o["failures"], o["errors"], o["reply_failures"]) == (1, 6, 1, 6)
    assert o["rate"] == pytest.approx(1 / 7)   # the six bad replies are in the denominator
    assert result.summary["failure_reasons"] == {k: 1 for k, _ in want.values()}
    assert result.summary["error_reasons"] == {"server": 1}
    assert "policy failures from invalid replies, counted in the rate (6)" in result.table
    assert "infrastructure errors, retried and not counted (1): server 1" in result.table


@pytest.mark.slow
def test_openpi_server_errors_and_nan_are_failures_not_errors(libero, tmp_path):
    """openpi's server answers a policy exception with a traceback text frame and closes the
    connection: each such episode is a failure (server_INTERNAL), and the next one reconnects.
    NaN actions from it are a failure too."""
    d = demo()
    cfg = EvalConfig(task_suite_name=d["suite"], tasks=[d["task_id"]], num_trials_per_task=2, max_steps=70,
                     renderer=libero, progress=False, retries=1, ready_timeout_s=60, eval_chunk_size=5)
    for mode, kind in (("raise", "server_INTERNAL"), ("nan", "actions_nonfinite")):
        peer = OpenpiPeer(tmp_path, mode, replan=5)
        try:
            result = run_eval(cfg, peer.url, tmp_path / mode, log=lambda m: None)
        finally:
            peer.stop()
        lines = read_results(tmp_path / mode / "results.jsonl")
        assert len(lines) == 2
        first = [x for x in lines if x["trial"] == 0][0]
        assert first["error"] is None and first["failure"].startswith(kind), first
        o = result.summary["overall"]
        assert o["errors"] == 0 and o["failures"] >= 1 and o["successes"] + o["failures"] == 2, o
    assert "scripted policy failure" in read_results(tmp_path / "raise/results.jsonl")[0]["failure"]
