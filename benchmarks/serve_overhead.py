"""Serving overhead per transport: round trip minus the policy's own time, no-op policy,
LIBERO-size observation (two 256×256×3 uint8 cameras + proprio + prompt), loopback.

Measured side by side in one run against the same server process, transports interleaved
in rounds so machine noise hits all of them alike. Goal: p50 ≤ 1 ms and p99 ≤ 3 ms.

    .venv/bin/python benchmarks/serve_overhead.py [--requests 600]
"""
from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import ServerProcess, pct, result  # noqa: E402
from policy_server.schema import example_observation  # noqa: E402
from vla.wire import connect  # noqa: E402

TRANSPORTS = ("grpc", "ws", "http")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=600, help="per transport")
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args(argv)
    obs = example_observation(256, 256)
    with ServerProcess("--scripted", "noop", "--max-queue-delay-ms", "0", "--max-batch-size", "1") as server:
        server.wait_ready()
        clients = {t: connect(server.url(t), token="", retries=0) for t in TRANSPORTS}
        overhead = {t: [] for t in TRANSPORTS}
        rtt = {t: [] for t in TRANSPORTS}
        for t in TRANSPORTS:
            for _ in range(args.warmup):
                clients[t].infer(obs)
        rounds, per_round = max(args.requests // 20, 1), 20
        for _ in range(rounds):
            for t in TRANSPORTS:
                c = clients[t]
                for _ in range(per_round):
                    start = time.perf_counter()
                    reply = c.infer(obs)
                    total_ms = (time.perf_counter() - start) * 1000.0
                    rtt[t].append(total_ms)
                    overhead[t].append(total_ms - reply["policy_timing"]["infer_ms"])
        for c in clients.values():
            c.close()
    print(f"{'transport':<10}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}   (round trip minus policy time)")
    for t in TRANSPORTS:
        print(f"{t:<10}{len(overhead[t]):>6}{pct(overhead[t], 50):>10.3f}{pct(overhead[t], 90):>10.3f}"
              f"{pct(overhead[t], 99):>10.3f}")
    worst_p50 = max(pct(overhead[t], 50) for t in TRANSPORTS)
    worst_p99 = max(pct(overhead[t], 99) for t in TRANSPORTS)
    print(result("serve_overhead_p99_ms", worst_p99, "<=", 3.0))
    print(result("serve_overhead_p50_ms", worst_p50, "<=", 1.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
