"""Dynamic batching speed-up on the tiny π0: 8 concurrent clients, throughput with
`max_batch_size=8` over `max_batch_size=1`, same server code, same run: both servers stay up
and the load alternates between them in slices, so the machine's drifting background load
falls on both alike. Prints where the time went (queue wait vs compute, from the replies).
Goal: ≥ 2.5×.

    .venv/bin/python benchmarks/serve_batching.py [--seconds 20] [--rounds 4] [--clients 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import ServerProcess, make_tiny_pi0_work_dir, pct, result  # noqa: E402
from policy_server.schema import example_observation  # noqa: E402
from vla.wire import connect  # noqa: E402


def load(server: ServerProcess, clients: int, seconds: float, transports=("grpc", "ws", "http")) -> dict:
    obs = example_observation(256, 256)
    stop = threading.Event()
    lat, queue, compute, batch = [], [], [], []
    lock = threading.Lock()
    errors = []

    def worker(i: int) -> None:
        c = connect(server.url(transports[i % len(transports)]), token="", retries=0, timeout_s=120)
        c.infer(obs)   # connect before the clock starts
        barrier.wait()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = c.infer(obs)
            except Exception as exc:  # noqa: BLE001  (counted and printed)
                errors.append(repr(exc))
                continue
            with lock:
                lat.append((time.perf_counter() - t) * 1000)
                queue.append(r["server_timing"].get("queue_ms", 0.0))
                compute.append(r["policy_timing"]["infer_ms"])
                batch.append(r["server_timing"].get("batch_size", 1))
        c.close()

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    with lock:
        lat.clear(), queue.clear(), compute.clear(), batch.clear()
    start = time.perf_counter()
    time.sleep(seconds)
    with lock:
        n = len(lat)
        elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join(120)
    return {"n": n, "elapsed": elapsed, "lat": lat[:n], "queue": queue[:n], "compute": compute[:n],
            "batch": batch[:n], "errors": errors}


def merge(parts: list[dict]) -> dict:
    n = sum(p["n"] for p in parts)
    cat = {k: [x for p in parts for x in p[k]] for k in ("lat", "queue", "compute", "batch", "errors")}
    return {"rps": n / sum(p["elapsed"] for p in parts), "n": n, "p50": pct(cat["lat"], 50),
            "p99": pct(cat["lat"], 99), "queue": pct(cat["queue"], 50), "compute": pct(cat["compute"], 50),
            "batch": sum(cat["batch"]) / max(len(cat["batch"]), 1), "errors": cat["errors"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured load per setting (all rounds)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating slices per setting")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--delay-ms", type=float, default=10.0, help="max_queue_delay_ms of the batching server")
    ap.add_argument("--transport", choices=["grpc", "ws", "http", "mixed"], default="mixed",
                    help="what the clients use (mixed: round robin over the three)")
    ap.add_argument("--work-dir", help="serve this work dir instead of a fresh tiny π0 one")
    args = ap.parse_args(argv)
    settings = (("batch=1", 1, 0.0), ("batch=8", 8, args.delay_ms))
    transports = ("grpc", "ws", "http") if args.transport == "mixed" else (args.transport,)
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.work_dir) if args.work_dir else make_tiny_pi0_work_dir(Path(tmp) / "tiny_pi0")
        servers = {name: ServerProcess("--work-dir", str(wd), "--max-batch-size", str(bs),
                                       "--max-queue-delay-ms", str(delay)) for name, bs, delay in settings}
        try:
            for server in servers.values():
                server.wait_ready()
            # Both servers stay up; the load alternates between them in short slices, so the
            # machine's drifting background load falls on both settings alike.
            slices = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, server in servers.items():
                    slices[name].append(load(server, args.clients, args.seconds / args.rounds, transports))
        finally:
            for server in servers.values():
                server.stop()
    rows = {name: merge(parts) for name, parts in slices.items()}
    print(f"{'setting':<10}{'req/s':>8}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'queue p50':>11}{'compute p50':>13}"
          f"{'mean batch':>12}{'errors':>8}")
    for name, r in rows.items():
        print(f"{name:<10}{r['rps']:>8.1f}{r['n']:>6}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['queue']:>11.1f}"
              f"{r['compute']:>13.1f}{r['batch']:>12.2f}{len(r['errors']):>8}")
        for e in r["errors"][:3]:
            print("  error:", e)
    print(result("serve_batching_speedup", rows["batch=8"]["rps"] / rows["batch=1"]["rps"], ">=", 2.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
