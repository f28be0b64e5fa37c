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
    """`policy_server ARGS` on free loopback ports; stopped with SIGTERM (drain) on exit."""

    def __init__(self, *args: str, env: dict | None = None):
        self.grpc_port, self.http_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "policy_server.cli", *args, "--grpc-port", str(self.grpc_port),
               "--http-port", str(self.http_port), "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

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


def pct(values_ms, q) -> float:
    return float(np.percentile(np.asarray(values_ms), q)) if len(values_ms) else float("nan")


def result(name: str, value: float, op: str, goal: float) -> str:
    ok = value <= goal if op == "<=" else value >= goal
    return f"RESULT {name} {value:.3g} goal {op} {goal} {'PASS' if ok else 'FAIL'}"


def make_tiny_pi0_work_dir(root: Path) -> Path:
    """A real work dir for the tiny π0 config: config.json, statistics, a weights-only checkpoint
    (random weights: serving cost does not depend on training), `latest`, and its tokenizer."""
    import torch

    from vla import checkpoint as ckpt
    from vla.config import Config, build
    from vla.data.tiny_tokenizer import build_tiny_tokenizer
    from vla.io import atomic_write_text
    from vla.normalize import DatasetStatistics, FeatureStats, save_statistics

    root = Path(root)
    if (root / "latest").is_file():
        return root
    tok = build_tiny_tokenizer(root / "tokenizer")
    cfg = Config.fromfile(REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py")
    opts = [f"eval.dataset.transforms.{i}.tokenizer.model_path={tok}"
            for i, t in enumerate(cfg["eval"]["dataset"]["transforms"]) if "tokenizer" in t]
    opts += [f"train_dataloader.dataset.datasets.transforms.{i}.tokenizer.model_path={tok}"
             for i, t in enumerate(cfg["train_dataloader"]["dataset"]["datasets"]["transforms"]) if "tokenizer" in t]
    cfg.merge_options(opts)
    cfg.dump(root)
    import vla.models  # noqa: F401

    torch.manual_seed(0)
    model = build(cfg["model"])
    ckpt.save_weights(root, "checkpoint_epoch_1.pt", model.state_dict())
    rng = np.random.default_rng(0)

    def block(dim, mask=None):
        mean, std = rng.normal(0, 0.1, dim), rng.uniform(0.1, 0.3, dim)
        return FeatureStats(mean, std, mean - 3 * std, mean + 3 * std, mean - 2 * std, mean + 2 * std, mask)

    action = block(7, [True] * 6 + [False])
    action.min[-1] = -1.0
    save_statistics(root / "dataset_statistics.json", "libero_10_no_noops", DatasetStatistics(action, block(8)))
    atomic_write_text(root / "latest", "checkpoint_epoch_1.pt")
    return root
