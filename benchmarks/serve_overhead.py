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
from vla.wire import connect, packb  # noqa: E402

TRANSPORTS = ("grpc", "ws", "http")

# The machine's floor, measured alongside: a bare TCP server in its own process that reads the
# same msgpack frame (length-prefixed) and answers with 280 bytes (about a reply's size).
_ECHO = r"""
import socket, struct, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(1 << 20)
while True:
    head = conn.recv(4, socket.MSG_WAITALL)
    if len(head) < 4: break
    n = struct.unpack("<I", head)[0]; view = memoryview(buf)[:n]; got = 0
    while got < n: got += conn.recv_into(view[got:], n - got)
    conn.sendall(b"x" * 280)
"""


class RawSocketFloor:
    def __init__(self):
        import socket
        import struct
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.struct = struct
        self.socket = socket

    def infer(self, frame: bytes) -> None:
        self.sock.sendall(self.struct.pack("<I", len(frame)) + frame)
        self.sock.recv(280, self.socket.MSG_WAITALL)

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=600, help="per transport")
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args(argv)
    obs = example_observation(256, 256)
    frame = packb(obs)
    floor = RawSocketFloor()
    with ServerProcess("--scripted", "noop", "--max-queue-delay-ms", "0", "--max-batch-size", "1") as server:
        server.wait_ready()
        clients = {t: connect(server.url(t), token="", retries=0) for t in TRANSPORTS}
        overhead = {t: [] for t in (*TRANSPORTS, "raw tcp")}
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
                    overhead[t].append(total_ms - reply["policy_timing"]["infer_ms"])
            for _ in range(per_round):
                start = time.perf_counter()
                floor.infer(frame)
                overhead["raw tcp"].append((time.perf_counter() - start) * 1000.0)
        for c in clients.values():
            c.close()
    floor.close()
    print(f"{'transport':<10}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}   (round trip minus policy time;"
          f" 'raw tcp' = the same bytes to a bare socket server: this machine's floor now)")
    for t in (*TRANSPORTS, "raw tcp"):
        print(f"{t:<10}{len(overhead[t]):>6}{pct(overhead[t], 50):>10.3f}{pct(overhead[t], 90):>10.3f}"
              f"{pct(overhead[t], 99):>10.3f}")
    worst_p50 = max(pct(overhead[t], 50) for t in TRANSPORTS)
    worst_p99 = max(pct(overhead[t], 99) for t in TRANSPORTS)
    print(result("serve_overhead_p99_ms", worst_p99, "<=", 3.0))
    print(result("serve_overhead_p50_ms", worst_p50, "<=", 1.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
