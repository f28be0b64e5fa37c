"""Dynamic batching on the tiny π0 at the server's default flags, against batching off
(`--max-batch-size 1`), same server code, same run: every round starts a fresh server per
setting, and the load alternates between them in slices, so the machine's drifting background
load falls on both alike. Prints where the time went (queue wait vs compute, from the replies).

Goals: 8 concurrent clients get ≥ 2.5× the throughput of batching off, and a lone client's
p50 round trip is within 5% of batching off (batching costs a lone request nothing).

    .venv/bin/python benchmarks/serve_batching.py [--seconds 40] [--rounds 8] [--clients 8]
                                                  [--client-mode threads|processes] [--work-dir WD]
                                                  [--also='--max-queue-delay-ms 0' ...]

The clients' process keeps freed heap memory for reuse as the server does (`--malloc-keep-mb`,
`policy_server.malloc.keep_freed_memory`): otherwise grpc's client page-faults its request buffers in
again for every request (160 faults, ~0.3 ms of CPU per gRPC request), CPU the 2-core machine
takes from the server under test, in every setting alike.

Clients are threads of this process by default. `--client-mode processes` runs one process per
client, as sim workers run; on this 2-core machine it measured worse (2.31×/2.08× vs 2.60×/2.47×
for threads in the same session: eight more processes to schedule), so threads stay the default.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._serve_common import ServerProcess, make_tiny_pi0_work_dir, pct, result  # noqa: E402
from policy_server.malloc import KEEP_FREED_MB, keep_freed_memory  # noqa: E402
from policy_server.schema import example_observation  # noqa: E402
from vla.wire import connect  # noqa: E402


def load(server: ServerProcess, clients: int, seconds: float, transports=("grpc", "ws", "http")) -> dict:
    obs = example_observation(256, 256)
    stop = threading.Event()
    lat, queue, compute = [], [], []
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
                queue.append(r["server_timing"].get("queue_ms", float("nan")))
                compute.append(r["policy_timing"]["infer_ms"])
        c.close()

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    calls0 = server.batch_stats()
    with lock:
        lat.clear(), queue.clear(), compute.clear()
    start = time.perf_counter()
    time.sleep(seconds)
    with lock:
        n = len(lat)
        elapsed = time.perf_counter() - start
    calls1 = server.batch_stats()
    stop.set()
    for t in threads:
        t.join(120)
    return {"n": n, "elapsed": elapsed, "lat": lat[:n], "queue": queue[:n], "compute": compute[:n],
            "errors": errors,
            "calls": calls1[0] - calls0[0], "batched": calls1[1] - calls0[1]}


def _client_process(url: str, t_start: float, t_stop: float) -> dict:
    """One client in its own process: connect and warm up, then loop until t_stop; requests that
    finish inside [t_start, t_stop] count (perf_counter is CLOCK_MONOTONIC, shared by processes)."""
    keep_freed_memory(KEEP_FREED_MB)
    obs = example_observation(256, 256)
    rows, errors = [], []
    with connect(url, token="", retries=0, timeout_s=120) as c:
        c.infer(obs)
        while time.perf_counter() < t_stop:
            t = time.perf_counter()
            try:
                r = c.infer(obs)
            except Exception as exc:  # noqa: BLE001  (counted and printed)
                errors.append(repr(exc))
                continue
            end = time.perf_counter()
            if t_start <= end <= t_stop:
                rows.append(((end - t) * 1000, r["server_timing"].get("queue_ms", float("nan")),
                             r["policy_timing"]["infer_ms"]))
    return {"rows": rows, "errors": errors}


def load_processes(pool, server: ServerProcess, clients: int, seconds: float, transports) -> dict:
    """Like `load`, with each client in its own process, as sim workers are (each with its own GIL)."""
    t_start = time.perf_counter() + 5.0   # time for every client to connect and warm up
    t_stop = t_start + seconds
    pending = pool.starmap_async(_client_process, [(server.url(transports[i % len(transports)]), t_start, t_stop)
                                                   for i in range(clients)])
    time.sleep(max(t_start - time.perf_counter(), 0.0))
    calls0 = server.batch_stats()
    time.sleep(max(t_stop - time.perf_counter(), 0.0))
    calls1 = server.batch_stats()
    parts = pending.get(180)
    rows = [row for p in parts for row in p["rows"]]
    return {"n": len(rows), "elapsed": seconds, "lat": [r[0] for r in rows], "queue": [r[1] for r in rows],
            "compute": [r[2] for r in rows], "errors": [e for p in parts for e in p["errors"]],
            "calls": calls1[0] - calls0[0], "batched": calls1[1] - calls0[1]}


def merge(parts: list[dict]) -> dict:
    n = sum(p["n"] for p in parts)
    cat = {k: [x for p in parts for x in p[k]] for k in ("lat", "queue", "compute", "errors")}
    return {"rps": n / sum(p["elapsed"] for p in parts), "n": n, "p50": pct(cat["lat"], 50),
            "p99": pct(cat["lat"], 99), "queue": pct([q for q in cat["queue"] if q == q], 50),
            "compute": pct(cat["compute"], 50),
            "batch": sum(p["batched"] for p in parts) / max(sum(p["calls"] for p in parts), 1), "errors": cat["errors"]}


SETTINGS = {"off": ("--max-batch-size", "1"), "default": ()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Eight rounds of 5 s: the lone ratio's 5% goal is inside the spread of one server pair on this
    # machine (four rounds gave 1.10 and eight 0.99 within minutes, the queue wait 0.03 ms in both).
    ap.add_argument("--seconds", type=float, default=40.0, help="measured load per setting and phase (all rounds)")
    ap.add_argument("--rounds", type=int, default=8, help="rounds, each with fresh servers and a slice per setting")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--transport", choices=["grpc", "ws", "http", "mixed"], default="mixed",
                    help="what the clients use (mixed: round robin over the three; the lone client takes each in turn)")
    ap.add_argument("--work-dir", help="serve this work dir instead of a fresh tiny π0 one")
    ap.add_argument("--client-mode", choices=["threads", "processes"], default="threads",
                    help="clients as threads of this process (default) or one process per client")
    ap.add_argument("--also", action="append", default=[], metavar="FLAGS",
                    help="one more server setting measured in the same interleaved slices, e.g. "
                         "--also='--max-queue-delay-ms 0' (repeatable; its rows are printed, the RESULTs "
                         "stay default against off)")
    args = ap.parse_args(argv)
    keep_freed_memory(KEEP_FREED_MB)   # this process's clients (see the module doc)
    settings = dict(SETTINGS)
    for i, flags in enumerate(args.also, 1):
        settings[f"also{i}"] = tuple(flags.split())
    transports = ("grpc", "ws", "http") if args.transport == "mixed" else (args.transport,)
    phases = {"many": args.clients, "lone": 1}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(args.work_dir) if args.work_dir else make_tiny_pi0_work_dir(Path(tmp) / "tiny_pi0")
        pool = (multiprocessing.get_context("spawn").Pool(args.clients)
                if args.client_mode == "processes" else None)
        slices = {(phase, name): [] for phase in phases for name in settings}
        try:
            for r in range(args.rounds):
                # Fresh server processes every round, so no one process's speed stands for a setting
                # through the whole run: three servers with identical flags in one run computed the
                # batch of one at 8.2-9.0 ms, and one server's 5 s slices ranged 6.5-10.3 ms.
                servers = {name: ServerProcess("--work-dir", str(wd), *flags) for name, flags in settings.items()}
                try:
                    for server in servers.values():
                        server.wait_ready()
                    # The servers of a round stay up and the load alternates between them in short
                    # slices, so the machine's drifting background load falls on every setting alike.
                    for phase, clients in phases.items():
                        # The lone client takes each transport in turn, round by round.
                        use = transports if clients > 1 else (transports[r % len(transports)],)
                        # Every other round takes the settings in reverse: the slice after another one
                        # measured slower for the same server flags (a lone client: 11.4 against 9.7 ms
                        # p50 with 'off' measured twice), so no setting may always run first.
                        order = list(servers.items())
                        for name, server in (order if r % 2 == 0 else order[::-1]):
                            if pool is not None:
                                part = load_processes(pool, server, clients, args.seconds / args.rounds, use)
                            else:
                                part = load(server, clients, args.seconds / args.rounds, use)
                            slices[(phase, name)].append(part)
                finally:
                    for server in servers.values():
                        server.stop()
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    rows = {key: merge(parts) for key, parts in slices.items()}
    print(f"{'clients':<9}{'setting':<9}{'req/s':>8}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'queue p50':>11}"
          f"{'compute p50':>13}{'batch/call':>12}{'errors':>8}")
    for (phase, name), r in rows.items():
        print(f"{phases[phase]:<9}{name:<9}{r['rps']:>8.1f}{r['n']:>6}{r['p50']:>9.2f}{r['p99']:>9.2f}"
              f"{r['queue']:>11.2f}{r['compute']:>13.2f}{r['batch']:>12.2f}{len(r['errors']):>8}")
        for e in r["errors"][:3]:
            print("  error:", e)
    print(f"clients: {args.clients} {args.client_mode}, transports: {'/'.join(transports)}; "
          f"'off' = --max-batch-size 1, 'default' = no batching flags"
          + "".join(f", 'also{i}' = {flags}" for i, flags in enumerate(args.also, 1)))
    print(result("serve_batching_speedup", rows[("many", "default")]["rps"] / rows[("many", "off")]["rps"],
                 ">=", 2.5))
    print(result("serve_batching_lone_p50_ratio", rows[("lone", "default")]["p50"] / rows[("lone", "off")]["p50"],
                 "<=", 1.05))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
