"""Soak: 64 clients over the three transports against the tiny π0 for a bounded time, with the
queue deliberately too small (overload). Pass: no errors other than RESOURCE_EXHAUSTED (which
clients treat as back-pressure and retry after a pause), server RSS at the end within 10% of
its RSS after the warm-up phase, and a clean drain on SIGTERM. Prints p50/p99 latency.

    .venv/bin/python benchmarks/soak.py [--duration 60] [--clients 64]
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import ServerProcess, make_tiny_pi0_work_dir, pct, result  # noqa: E402
from policy_server.schema import example_observation  # noqa: E402
from vla.wire import connect  # noqa: E402
from vla.wire.errors import ErrorCode, PolicyError  # noqa: E402

TRANSPORTS = ("grpc", "ws", "http")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (bounded)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-queue-size", type=int, default=16, help="small on purpose: overload")
    ap.add_argument("--work-dir", help="serve this work dir instead of a fresh tiny π0 one")
    args = ap.parse_args(argv)
    warm_s = max(5.0, 0.1 * args.duration)
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.work_dir) if args.work_dir else make_tiny_pi0_work_dir(Path(tmp) / "tiny_pi0")
        server = ServerProcess("--work-dir", str(wd), "--max-batch-size", "8", "--max-queue-delay-ms", "5",
                               "--max-queue-size", str(args.max_queue_size), "--request-timeout-s", "30")
        try:
            server.wait_ready()
            rss_ready = server.rss_mb()
            stop = threading.Event()
            lock = threading.Lock()
            lat = collections.defaultdict(list)
            codes = collections.Counter()
            errors: list[str] = []
            measuring = threading.Event()

            def client(i: int) -> None:
                transport = TRANSPORTS[i % 3]
                obs = example_observation(256, 256)
                rng = random.Random(i)
                c = connect(server.url(transport), token="", retries=0, timeout_s=60)
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        c.infer(obs)
                        code = "OK"
                    except PolicyError as exc:
                        code = exc.code.value
                        if exc.code is not ErrorCode.RESOURCE_EXHAUSTED:
                            with lock:
                                errors.append(f"{transport}: {exc}")
                    except Exception as exc:  # noqa: BLE001  (anything else is a failure; counted)
                        code = "CLIENT_EXCEPTION"
                        with lock:
                            errors.append(f"{transport}: {exc!r}")
                    ms = (time.perf_counter() - t) * 1000
                    if measuring.is_set():
                        with lock:
                            codes[(transport, code)] += 1
                            if code == "OK":
                                lat[transport].append(ms)
                    if code == "RESOURCE_EXHAUSTED":
                        time.sleep(rng.uniform(0.005, 0.05))   # back-pressure: back off, then retry
                c.close()

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(warm_s)
            rss_warm = server.rss_mb()
            measuring.set()
            start = time.monotonic()
            trace = []
            while time.monotonic() - start < args.duration - warm_s:
                time.sleep(min(5.0, max(args.duration - warm_s - (time.monotonic() - start), 0.01)))
                trace.append(round(server.rss_mb()))
            rss_end = server.rss_mb()
            elapsed = time.monotonic() - start
            stop.set()
            for t in threads:
                t.join(90)
        finally:
            rc = server.stop()
    ok = sum(v for (tr, code), v in codes.items() if code == "OK")
    exhausted = sum(v for (tr, code), v in codes.items() if code == "RESOURCE_EXHAUSTED")
    print(f"{args.clients} clients, {args.duration:.0f}s ({warm_s:.0f}s warm-up), max_queue_size "
          f"{args.max_queue_size}: {ok} OK ({ok / elapsed:.1f}/s), {exhausted} RESOURCE_EXHAUSTED, "
          f"{len(errors)} other errors; server exit code {rc}")
    for transport in TRANSPORTS:
        print(f"  {transport:<5} p50 {pct(lat[transport], 50):7.1f} ms  p99 {pct(lat[transport], 99):7.1f} ms  "
              f"n={len(lat[transport])}")
    all_lat = [x for v in lat.values() for x in v]
    print(f"  all   p50 {pct(all_lat, 50):7.1f} ms  p99 {pct(all_lat, 99):7.1f} ms")
    print(f"server RSS MB: ready {rss_ready:.0f}, after warm-up {rss_warm:.0f}, end {rss_end:.0f}; trace {trace}")
    for e in errors[:5]:
        print("  error:", e)
    print(result("soak_rss_growth", rss_end / rss_warm, "<=", 1.10))
    print(result("soak_errors", float(len(errors) + (rc != 0) + (ok == 0)), "<=", 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
