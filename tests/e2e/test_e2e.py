"""The demo's whole path through real processes and sockets, for each model family:
LIBERO recording -> scripts/train.sh (torchrun) -> scripts/eval.sh (policy_server over gRPC +
sim_client workers) -> the report; then the trained work dir served again and asked over gRPC
and websocket. And the chain fails loudly when one of its processes is broken."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tests.conftest import REPO, free_port

from .conftest import EVAL_MAX_STEPS, RECORD, TRAIN_STEPS, demo_env, family_run, run_demo

FAMILIES = {"pi0": "PI0FlowMatching", "pi05": "PI05FlowMatching", "gr00t": "LlavaVLA"}
CHUNK = {"pi0": 5, "pi05": 10, "gr00t": 10}  # eval_chunk_size of the demo's configs


def _check_work_dir(work_dir):
    import torch

    for name in ("config.json", "config.yaml", "dataset_statistics.json", "metrics.jsonl", "loss.png", "latest"):
        assert (work_dir / name).is_file(), f"{work_dir} lacks {name}"
    latest = (work_dir / "latest").read_text().strip()
    assert latest == f"checkpoint_step_{TRAIN_STEPS}.pt", latest
    state = torch.load(work_dir / latest, map_location="cpu", weights_only=True)
    assert state and all(torch.is_tensor(v) for v in state.values())
    steps = [json.loads(line)["step"] for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TRAIN_STEPS + 1)), steps
    stats = json.loads((work_dir / "dataset_statistics.json").read_text())
    (entry,) = stats.values()
    assert len(entry["action"]["mean"]) == 7 and len(entry["proprio"]["mean"]) == 8
    assert entry["num_trajectories"] == 2  # the two recorded episodes


def _check_eval(work_dir, stdout, family):
    from demo.report import histogram_buckets

    out = work_dir / "eval"
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((x["task_id"], x["trial"]) for x in lines) == [(0, 0), (1, 0)], lines
    assert all(not x["error"] and 1 <= x["steps"] <= EVAL_MAX_STEPS for x in lines), lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["errors"] == 0
    # The sim client's queries all reached the server over gRPC, and were answered.
    _, requests = histogram_buckets((out / "server_metrics.prom").read_text())
    queries = sum(math.ceil(x["steps"] / CHUNK[family]) for x in lines)
    assert requests.get(("grpc", "OK")) == queries, requests
    assert not any(code != "OK" for (_, code), n in requests.items() if n), requests
    # The report: the success table with both tasks and the overall row, latency, where things are.
    report = stdout[stdout.rindex("suite "):]  # the demo's final report (eval.sh printed one table before)
    table = [ln for ln in report.splitlines() if ln.startswith(("libero_object", "overall"))]
    assert [ln.split()[1] for ln in table if ln.startswith("libero_object")] == ["0", "1"], stdout
    assert any(ln.startswith("overall") and "/2" in ln for ln in table), stdout
    assert "p50" in report and f"{queries} requests" in report, report
    assert "Measured:" in report and "not expected to succeed" not in report, report
    assert str(out / "results.jsonl") in report


def _serve_and_ask(work_dir, log_path):
    """The trained work dir served again: the same observation over gRPC and websocket gives the
    same actions (fixed noise seed), in robot units [chunk, 7]; /metrics counts both transports."""
    from vla.wire import PolicyError

    grpc_port, http_port = free_port(), free_port()
    log = open(log_path, "w")  # a file, not a pipe nobody reads: a chatty server must never block
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--work-dir", str(work_dir), "--seed", "0",
                             "--host", "127.0.0.1", "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
                            cwd=REPO, env=demo_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        return _ask_both(grpc_port, http_port)
    except PolicyError as exc:
        log.flush()
        pytest.fail(f"policy server on {work_dir}: {exc}\n{log_path.read_text()[-3000:]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ask_both(grpc_port: int, http_port: int) -> dict:
    from policy_server.schema import example_observation
    from demo.report import histogram_buckets
    from vla.wire.client import connect

    obs = example_observation(256, 256)
    obs["prompt"] = "put both the alphabet soup and the tomato sauce in the basket"
    obs["seed"] = 1234   # the server draws fresh noise per request; a request seed makes it repeatable
    replies = {}
    for scheme, port in (("grpc", grpc_port), ("ws", http_port)):
        client = connect(f"{scheme}://127.0.0.1:{port}", timeout_s=60)
        try:
            client.wait_ready(timeout_s=180)
            info = client.server_info()
            replies[scheme] = np.asarray(client.infer(obs)["actions"])
        finally:
            client.close()
    assert replies["grpc"].shape == (info.chunk_length, 7), (replies["grpc"].shape, info)
    assert np.isfinite(replies["grpc"]).all()
    np.testing.assert_allclose(replies["grpc"], replies["ws"], rtol=1e-5, atol=1e-6)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        _, requests = histogram_buckets(r.read().decode())
    assert requests.get(("grpc", "OK")) == 1 and requests.get(("ws", "OK")) == 1, requests
    return info


@pytest.mark.libero
@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_demo_path_end_to_end(demo_root, family, tmp_path):
    work_dir, proc = family_run(demo_root, family)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "record: complete" in proc.stderr and "tokenizer: complete" in proc.stderr  # shared data reused
    _check_work_dir(work_dir)
    _check_eval(work_dir, proc.stdout, family)
    info = _serve_and_ask(work_dir, tmp_path / "server.log")
    assert info.model == FAMILIES[family] or FAMILIES[family] in json.dumps(info.to_dict()), info


@pytest.mark.libero
@pytest.mark.timeout(300)
def test_rerun_skips_every_completed_step(demo_root):
    work_dir, first = family_run(demo_root, "pi0")
    assert first.returncode == 0, first.stderr[-4000:]
    before = {p: p.stat().st_mtime_ns for p in work_dir.glob("checkpoint_*.pt")}
    proc = run_demo(demo_root, "--config", "pi0", *_family_args(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for step in ("record", "tokenizer", "train", "eval"):
        assert f"demo: {step}: complete" in proc.stderr, proc.stderr
    assert "$ bash" not in proc.stderr  # neither train.sh nor eval.sh ran
    assert {p: p.stat().st_mtime_ns for p in work_dir.glob("checkpoint_*.pt")} == before
    assert "overall" in proc.stdout


def _family_args():
    from .conftest import FAMILY_ARGS

    return FAMILY_ARGS


@pytest.mark.libero
@pytest.mark.timeout(300)
def test_a_corrupt_checkpoint_fails_the_chain(demo_root, tmp_path):
    """The trained pi0 work dir, copied with its train marker, its checkpoint overwritten: the server
    cannot load it, eval.sh reports that, the demo exits non-zero and marks nothing complete."""
    work_dir, first = family_run(demo_root, "pi0")
    assert first.returncode == 0, first.stderr[-4000:]
    broken = _copy_trained(work_dir, tmp_path / "broken")
    latest = (broken / "latest").read_text().strip()
    (broken / latest).write_bytes(b"PK\x03\x04 this is not a checkpoint")
    proc = run_demo(demo_root, "--config", "pi0", "--work-dir", str(broken), *_family_args(), timeout=240)
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "demo: train: complete" in proc.stderr  # the copied marker was honoured
    assert "policy_server exited before it was ready" in proc.stderr
    assert "demo: evaluation failed" in proc.stderr
    assert not (broken / ".demo" / "eval.json").exists()
    assert not (broken / "eval" / "results.jsonl").exists()
    assert "overall" not in proc.stdout


def _copy_trained(work_dir, dest):
    """A trained work dir (files + train marker, no evaluation) at `dest`."""
    (dest / ".demo").mkdir(parents=True)
    for f in work_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    shutil.copy2(work_dir / ".demo" / "train.json", dest / ".demo" / "train.json")
    return dest


@pytest.mark.slow
@pytest.mark.libero
@pytest.mark.timeout(400)
def test_a_server_that_dies_mid_evaluation_fails_the_chain(demo_root, tmp_path):
    """SIGKILL the policy server once the sim client has started its episodes: the episodes are
    recorded as infrastructure errors (not policy failures), the demo exits non-zero and does not
    mark the evaluation complete."""
    import os
    import threading
    import time

    work_dir, first = family_run(demo_root, "pi0")
    assert first.returncode == 0, first.stderr[-4000:]
    broken = _copy_trained(work_dir, tmp_path / "dies")
    cmd = [sys.executable, "-m", "demo", "--root", str(demo_root), *RECORD, "--config", "pi0",
           "--work-dir", str(broken), *_family_args()]
    env = demo_env(EVAL_ARGS="--retries 0 --ready-timeout-s 5 --request-timeout-s 5")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    stderr_lines, killed = [], None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        stderr_lines.append(line)
        if killed is None and line.startswith("sim_client: 2 episodes"):
            pids = subprocess.run(["pgrep", "-f", f"policy_server.cli --work-dir {broken}"],
                                  capture_output=True, text=True).stdout.split()
            assert len(pids) == 1, pids
            killed = int(pids[0])
            os.kill(killed, signal.SIGKILL)
        assert time.monotonic() < deadline, "".join(stderr_lines[-50:])
    proc.wait(timeout=60)
    reader.join(timeout=10)
    stderr = "".join(stderr_lines)
    assert killed is not None, stderr[-4000:]
    assert proc.returncode == 1, stderr[-4000:]
    assert "demo: evaluation failed (exit 3)" in stderr, stderr[-4000:]
    lines = [json.loads(x) for x in (broken / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["error"] and not x["success"] for x in lines), lines
    assert not (broken / ".demo" / "eval.json").exists()
    assert "overall success rate" not in "".join(stdout_chunks)
