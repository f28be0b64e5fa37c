"""Serving overhead per transport, side by side with the peer, at the server's default flags.

One LIBERO-size observation (two 256×256×3 uint8 cameras, 8-dim state, prompt; openpi's keys)
goes round trip, one request at a time, to:

    ws     `policy_server` (default flags) and openpi's own `WebsocketPolicyServer`
           (PyPI `openpi-server`), both through openpi's unmodified `WebsocketClientPolicy`
    grpc   `policy_server` and a bare grpcio server doing the same decode (the floor)
    http   `policy_server` and a bare uvicorn app doing the same decode (the floor)

Every server is its own process serving the same policy, called the way ours calls it
(benchmarks/_serve_peers.py); the six targets are interleaved in rounds so the machine's
drifting load falls on all alike. Overhead = our p50 minus the peer's or floor's p50.
Goals: websocket p50 and p99 ≤ openpi's in the same run; every transport's p50 overhead ≤ 1 ms.

    .venv/bin/python benchmarks/serve_overhead.py [--requests 1000] [--engine noop|tiny-pi0] [--work-dir WD]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import REPO, ServerProcess, free_port, make_tiny_pi0_work_dir, pct, result  # noqa: E402
from vla.wire import connect  # noqa: E402


def libero_observation(seed: int = 0) -> dict:
    """What openpi's LIBERO example client sends, at 256×256."""
    rng = np.random.default_rng(seed)
    return {"observation/image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "observation/state": rng.normal(0, 0.3, 8).astype(np.float32),
            "prompt": "put both the alphabet soup and the tomato sauce in the basket"}


class PeerProcess:
    """benchmarks/_serve_peers.py KIND in its own process, on a free port."""

    def __init__(self, kind: str, work_dir: str | None):
        self.port = free_port()
        cmd = [sys.executable, str(REPO / "benchmarks/_serve_peers.py"), kind, "--port", str(self.port)]
        if work_dir:
            cmd += ["--work-dir", work_dir]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                                     env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"peer {kind} did not start (exit {self.proc.poll()})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def openpi_client(port: int, timeout_s: float = 30.0):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return WebsocketClientPolicy(host="127.0.0.1", port=port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _OpenpiCall:
    """Our clients' `infer` shape around openpi's client."""

    def __init__(self, client):
        self.client = client

    def infer(self, obs):
        return self.client.infer(obs)

    def close(self):
        self.client._ws.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="per target")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--engine", choices=["noop", "tiny-pi0"], default="noop",
                    help="the policy every server serves: the scripted no-op or the tiny π0 from a work dir")
    ap.add_argument("--work-dir", help="serve this work dir (implies a model engine)")
    args = ap.parse_args(argv)
    obs = libero_observation()
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir
        if work_dir is None and args.engine == "tiny-pi0":
            work_dir = str(make_tiny_pi0_work_dir(Path(tmp) / "tiny_pi0"))
        ours = ServerProcess(*(["--work-dir", work_dir] if work_dir else ["--scripted", "noop"]))
        peers = {}
        try:
            peers = {kind: PeerProcess(kind, work_dir) for kind in ("openpi", "grpc", "http")}
            ours.wait_ready()
            targets = {
                "ws ours": _OpenpiCall(openpi_client(ours.http_port)),
                "ws openpi": _OpenpiCall(openpi_client(peers["openpi"].port)),
                "grpc ours": connect(ours.url("grpc"), token="", retries=0),
                "grpc floor": connect(f"grpc://127.0.0.1:{peers['grpc'].port}", token="", retries=0),
                "http ours": connect(ours.url("http"), token="", retries=0),
                "http floor": connect(f"http://127.0.0.1:{peers['http'].port}", token="", retries=0),
            }
            for c in targets.values():
                for _ in range(args.warmup):
                    c.infer(obs)
            rtt = {name: [] for name in targets}
            per_round = 20
            for _ in range(max(args.requests // per_round, 1)):
                for name, c in targets.items():
                    for _ in range(per_round):
                        start = time.perf_counter()
                        c.infer(obs)
                        rtt[name].append((time.perf_counter() - start) * 1000.0)
            for c in targets.values():
                c.close()
        finally:
            for p in peers.values():
                p.stop()
            rc = ours.stop()
    policy = f"work dir {args.work_dir}" if args.work_dir else args.engine
    print(f"policy: {policy}; policy_server at its default flags (exit {rc}); round trip per request, ms")
    print(f"{'target':<12}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, values in rtt.items():
        print(f"{name:<12}{len(values):>6}{pct(values, 50):>9.3f}{pct(values, 90):>9.3f}{pct(values, 99):>9.3f}")
    floor = {"ws": "ws openpi", "grpc": "grpc floor", "http": "http floor"}
    overhead = {t: pct(rtt[f"{t} ours"], 50) - pct(rtt[ref], 50) for t, ref in floor.items()}
    print("p50 overhead over the peer/floor, ms: " + ", ".join(f"{t} {v:+.3f}" for t, v in overhead.items()))
    print(result("serve_overhead_ws_p50_vs_openpi", pct(rtt["ws ours"], 50) / pct(rtt["ws openpi"], 50), "<=", 1.0))
    print(result("serve_overhead_ws_p99_vs_openpi", pct(rtt["ws ours"], 99) / pct(rtt["ws openpi"], 99), "<=", 1.0))
    print(result("serve_overhead_p50_ms", max(overhead.values()), "<=", 1.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
