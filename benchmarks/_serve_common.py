"""Helpers shared by the serving benchmarks: start a policy_server subprocess, percentiles."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`policy_server ARGS` on free loopback ports; stopped with SIGTERM (drain) on exit. It runs in
    this process's environment, as a user's would: the server sets its own torch threads
    (`--torch-threads`)."""

    def __init__(self, *args: str, env: dict | None = None):
        self.grpc_port, self.http_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "policy_server.cli", *args, "--grpc-port", str(self.grpc_port),
               "--http-port", str(self.http_port), "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})})

    def url(self, transport: str) -> str:
        port = self.grpc_port if transport == "grpc" else self.http_port
        return f"{transport}://127.0.0.1:{port}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        from vla.wire import connect

        with connect(self.url("http"), token="") as c:
            c.wait_ready(timeout_s=timeout_s, poll_s=0.1)

    def batch_stats(self) -> tuple[float, float]:
        """(policy calls, requests in them) so far, from the server's policy_batch_size histogram
        (gRPC replies carry no batch size, so the clients cannot count it)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=30) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith(("policy_batch_size_count ", "policy_batch_size_sum ")):
                name, value = line.split()
                values[name] = float(value)
        return values.get("policy_batch_size_count", 0.0), values.get("policy_batch_size_sum", 0.0)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def noop_grpc_server(max_batch_size: int = 1, max_queue_delay_ms: float = 0.0):
    """The evaluation benchmarks' stand-in: an in-process scripted no-op policy (chunk 10) on a free
    gRPC port, ready. Returns (server, url); call server.stop()."""
    from policy_server.batcher import BatcherConfig
    from policy_server.scripted import make_scripted
    from policy_server.server import PolicyServer
    from policy_server.service import ServiceConfig

    server = PolicyServer(make_scripted("noop", chunk_length=10), grpc_port=free_port(), http_port=None,
                          batcher=BatcherConfig(max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms),
                          service=ServiceConfig(token="")).start()
    server.wait_ready(30)
    return server, f"grpc://127.0.0.1:{server.grpc_port}"


def pct(values_ms, q) -> float:
    return float(np.percentile(np.asarray(values_ms), q)) if len(values_ms) else float("nan")


def result(name: str, value: float, op: str, goal: float) -> str:
    ok = value <= goal if op == "<=" else value >= goal
    return f"RESULT {name} {value:.3g} goal {op} {goal} {'PASS' if ok else 'FAIL'}"


TINY_PI0 = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py"


def make_tiny_pi0_work_dir(root: Path, steps: int = 10) -> Path:
    """A work dir the trainer really wrote: `vla-train` on the tiny π0 config for `steps` steps,
    on a small synthetic LeRobot v2.1 LIBERO dataset and the tiny tokenizer (reused if `root`
    already holds a finished run)."""
    from vla.data.synthetic import write_synthetic_libero_dataset
    from vla.data.tiny_tokenizer import build_tiny_tokenizer

    root = Path(root)
    if (root / "latest").is_file():
        return root
    data = write_synthetic_libero_dataset(root.parent / f"{root.name}_data", num_episodes=3, episode_length=12)
    tok = build_tiny_tokenizer(root.parent / f"{root.name}_tokenizer")
    options = [f"train_dataloader.dataset.datasets.data_root_path={data}",
               f"train_dataloader.dataset.datasets.transforms.2.tokenizer.model_path={tok}",
               f"eval.dataset.transforms.2.tokenizer.model_path={tok}",
               f"runner.max_steps={steps}", "runner.max_epochs=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", str(TINY_PI0), str(root), "--cfg-options", *options],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not (root / "latest").is_file():
        raise RuntimeError(f"training the tiny π0 work dir failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return root
