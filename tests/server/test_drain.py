"""SIGTERM during load: readiness off, every in-flight request answered, new ones refused, clean exit.

The model takes 300 ms a batch, so at the signal six requests are accepted and still unanswered."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

from policy_server.schema import example_observation
from tests.conftest import REPO, free_port
from vla.wire import connect, protocol
from vla.wire.errors import ErrorCode, PolicyError


def _inflight(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{protocol.METRICS_PATH}", timeout=5) as r:
        m = re.search(r"^policy_inflight_requests (\S+)$", r.read().decode(), re.M)
    return float(m.group(1))


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones():
    gport, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--scripted", "noop", "--chunk-length", "4", "--compute-ms", "300",
                             "--grpc-port", str(gport), "--http-port", str(hport), "--max-batch-size", "2",
                             "--max-queue-delay-ms", "0", "--drain-timeout-s", "20"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    urls = {"grpc": f"grpc://127.0.0.1:{gport}", "ws": f"ws://127.0.0.1:{hport}", "http": f"http://127.0.0.1:{hport}"}
    results: dict[int, object] = {}
    try:
        connect(urls["http"], token="").wait_ready(timeout_s=60, poll_s=0.1)
        obs = example_observation(32, 32)
        clients = [connect(urls[t], token="", retries=0, timeout_s=30) for t in ("grpc", "ws", "http") * 2]
        for c in clients:
            c.server_info()   # open connections before load so none is refused at connect

        def call(i, c):
            try:
                results[i] = c.infer(obs)["actions"]
            except PolicyError as exc:
                results[i] = exc

        threads = [threading.Thread(target=call, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while _inflight(hport) < len(clients):   # all six accepted: 3 batches of 2 x 300 ms of work queued
            assert time.monotonic() < deadline, "requests never all reached the server"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        sent_term = time.monotonic()
        time.sleep(0.1)
        late = connect(urls["grpc"], token="", retries=0, timeout_s=5)
        try:
            late.infer(example_observation(16, 16))
            raise AssertionError("a request after SIGTERM was served")
        except PolicyError as exc:
            assert exc.code is ErrorCode.UNAVAILABLE, exc
        assert not connect(urls["grpc"], token="", retries=0, timeout_s=2).is_ready()
        for t in threads:
            t.join(30)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - sent_term < 10
        for i in range(len(clients)):
            assert isinstance(results.get(i), np.ndarray), f"in-flight request {i} lost: {results.get(i)!r}"
            np.testing.assert_array_equal(results[i], np.tile([0, 0, 0, 0, 0, 0, -1], (4, 1)))
        assert "drained" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
