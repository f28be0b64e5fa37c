"""Soak: 64 clients over the three transports against a trained tiny π0 work dir for a bounded
time, with the queue deliberately too small (overload; RESOURCE_EXHAUSTED is back-pressure, the
clients back off and retry), then SIGTERM while requests are in flight.

Measured: server RSS and open file descriptors sampled through the run (least-squares slope
after the warm-up), p99 latency per time window, and the drain: every request the server had
accepted at the signal is answered, requests sent after it get UNAVAILABLE (or find the port
closed once the server is gone), and the server exits 0.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--clients 64] [--work-dir WD] [--server-flags FLAGS]
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import ServerProcess, make_tiny_pi0_work_dir, pct, result  # noqa: E402
from policy_server.schema import example_observation  # noqa: E402
from vla.wire import connect  # noqa: E402
from vla.wire.errors import ErrorCode, PolicyError  # noqa: E402

TRANSPORTS = ("grpc", "ws", "http")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def inflight(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        m = re.search(r"^policy_inflight_requests (\S+)$", r.read().decode(), re.M)
    return float(m.group(1))


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return float("nan")
    t, v = np.array(samples).T
    return float(np.polyfit(t, v, 1)[0] * 60.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load before the SIGTERM")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-queue-size", type=int, default=16, help="small on purpose: overload")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS / fd sampling period")
    ap.add_argument("--work-dir", help="serve this work dir instead of training a fresh tiny π0 one")
    ap.add_argument("--server-flags", default="", metavar="FLAGS",
                    help="more policy_server flags, e.g. --server-flags='--gil-switch-ms 1'")
    args = ap.parse_args(argv)
    warm_s = min(30.0, max(5.0, 0.1 * args.duration))
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.work_dir) if args.work_dir else make_tiny_pi0_work_dir(Path(tmp) / "tiny_pi0")
        server = ServerProcess("--work-dir", str(wd), "--max-queue-size", str(args.max_queue_size),
                               "--drain-timeout-s", "30", *args.server_flags.split())
        try:
            server.wait_ready()
            pid = server.proc.pid
            lock = threading.Lock()
            # (transport, code, start, end) for every request; code "OK", a taxonomy code, or "LOST"
            # (the client saw no reply: connection reset, timeout).
            log: list[tuple[str, str, float, float]] = []
            stop = threading.Event()

            def client(i: int) -> None:
                transport = TRANSPORTS[i % 3]
                obs = example_observation(256, 256)
                rng = random.Random(i)
                c = connect(server.url(transport), token="", retries=0, timeout_s=60)
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        c.infer(obs)
                        code = "OK"
                    except PolicyError as exc:
                        code = exc.code.value
                    except Exception:  # noqa: BLE001  (a reply never came)
                        code = "LOST"
                    with lock:
                        log.append((transport, code, t, time.monotonic()))
                    if code == "RESOURCE_EXHAUSTED":
                        time.sleep(rng.uniform(0.005, 0.05))   # back-pressure: back off, then retry
                    elif code not in ("OK",):
                        time.sleep(0.05)
                c.close()

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            trace: list[tuple[float, float, int]] = []   # (seconds since warm-up end, RSS MB, fds)
            while (now := time.monotonic()) - t0 < args.duration:
                time.sleep(min(args.sample_s, max(args.duration - (now - t0), 0.01)))
                if time.monotonic() - t0 >= warm_s:
                    trace.append((time.monotonic() - t0 - warm_s, server.rss_mb(), open_fds(pid)))
            read_at = time.monotonic()
            accepted = inflight(server.http_port)   # inside the server (queued, computing or being refused)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=60)
            exited = time.monotonic()
            stop.set()
            for t in threads:
                t.join(90)
        finally:
            rc_stop = server.stop()
    rc = rc if rc is not None else rc_stop
    measured = [r for r in log if t0 + warm_s <= r[2] and r[3] < signalled]
    elapsed = signalled - (t0 + warm_s)
    codes = collections.Counter(r[1] for r in measured)
    bad = {c: n for c, n in codes.items() if c not in ("OK", "RESOURCE_EXHAUSTED")}
    print(f"{args.clients} clients, {args.duration:.0f}s ({warm_s:.0f}s warm-up), max_queue_size {args.max_queue_size}, "
          f"work dir {wd}" + (f", server flags {args.server_flags}" if args.server_flags else ""))
    print(f"  {codes['OK']} OK ({codes['OK'] / elapsed:.1f}/s), {codes['RESOURCE_EXHAUSTED']} RESOURCE_EXHAUSTED, "
          f"other: {bad or 'none'}")
    for transport in TRANSPORTS:
        lat = [(r[3] - r[2]) * 1000 for r in measured if r[0] == transport and r[1] == "OK"]
        print(f"  {transport:<5} p50 {pct(lat, 50):7.1f} ms  p99 {pct(lat, 99):7.1f} ms  n={len(lat)}")
    # p99 per window of the measured period: bounded means the last third is no worse than the first.
    windows = 6
    edges = np.linspace(t0 + warm_s, signalled, windows + 1)
    p99s = [pct([(r[3] - r[2]) * 1000 for r in measured if r[1] == "OK" and a <= r[2] < b], 99)
            for a, b in zip(edges[:-1], edges[1:])]
    print("  p99 per window, ms: " + ", ".join(f"{p:.0f}" for p in p99s))
    rss_slope = slope_per_min([(t, rss) for t, rss, _ in trace])
    fd_slope = slope_per_min([(t, fd) for t, _, fd in trace])
    print(f"server RSS MB {trace[0][1]:.0f} -> {trace[-1][1]:.0f} (slope {rss_slope:+.2f} MB/min), "
          f"open fds {trace[0][2]} -> {trace[-1][2]} (slope {fd_slope:+.2f}/min), {len(trace)} samples")
    step = max(len(trace) // 12, 1)
    print("  RSS MB over time: " + ", ".join(f"{t:.0f}s {rss:.0f}" for t, rss, _ in trace[::step]))
    # The drain: requests in flight just before the signal (each gets a reply: OK, or a refusal it
    # would have got anyway, never a lost connection), and requests sent after the signal.
    during = [r for r in log if r[2] < read_at <= r[3]]
    after = [r for r in log if r[2] >= signalled + 0.5]   # the signal handler has run by then
    ok_during = sum(r[1] == "OK" for r in during)
    print(f"drain: {accepted:.0f} requests inside the server at the signal; of {len(during)} requests in flight, {ok_during} answered "
          f"OK ({collections.Counter(r[1] for r in during)}); after it: "
          f"{dict(collections.Counter(f'{r[0]} {r[1]}' for r in after))}; "
          f"exit {rc} in {exited - signalled:.1f}s")
    drain_errors = (ok_during == 0) + sum(r[1] == "OK" for r in after) + (rc != 0) \
        + sum(r[1] not in ("OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE") for r in during) \
        + sum(r[1] not in ("UNAVAILABLE", "LOST") for r in after)
    print(result("soak_rss_slope_mb_per_min", rss_slope, "<=", 1.0))
    print(result("soak_fd_slope_per_min", fd_slope, "<=", 1.0))
    print(result("soak_p99_growth", max(p99s[-2:]) / max(p99s[:2]), "<=", 2.0))
    print(result("soak_errors", float(sum(bad.values()) + (codes["OK"] == 0)), "<=", 0))
    print(result("soak_drain_errors", float(drain_errors), "<=", 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
