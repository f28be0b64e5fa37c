"""The three transports over real sockets: same observation, same actions, same errors."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from policy_server.batcher import BatcherConfig
from policy_server.scripted import make_scripted
from tests.conftest import REPO, free_port
from tests.server.conftest import TRANSPORTS, client, start_server
from vla.wire import connect, protocol
from vla.wire.errors import ErrorCode, PolicyError


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_noop_actions_and_info_on_every_transport(noop_server, transport, obs):
    with client(noop_server, transport) as c:
        assert c.is_ready()
        info = c.server_info()
        assert info.model == "scripted:noop" and info.chunk_length == 5 and info.action_dim == 7
        assert info.image_orientation == protocol.ORIENTATION_AS_RENDERED
        assert info.input_keys >= set(protocol.SIM_KEYS) | {"prompt"}
        for _ in range(3):   # the websocket connection is reused
            reply = c.infer(obs)
            np.testing.assert_array_equal(reply["actions"], np.tile([0, 0, 0, 0, 0, 0, -1], (5, 1)))
            assert reply["actions"].dtype == np.float32
            assert reply["model_version"] == "scripted-noop-1"
            assert reply["server_timing"]["infer_ms"] >= reply["policy_timing"]["infer_ms"] >= 0


def test_replay_is_identical_across_transports_and_follows_step():
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(12, 7)).astype(np.float32)
    seq[:, -1] = 1.0
    other = np.full((3, 7), 0.5, dtype=np.float32)
    server = start_server(make_scripted("replay", chunk_length=4, sequences={"open the drawer": seq, "*": other}))
    try:
        from policy_server.schema import example_observation

        obs = dict(example_observation(32, 32), prompt="open the drawer")
        got = {}
        for transport in TRANSPORTS:
            with client(server, transport) as c:
                got[transport] = [c.infer(dict(obs, replay_step=np.int64(s)))["actions"] for s in (0, 4, 10)]
        for transport in TRANSPORTS:
            for a, b in zip(got[transport], got["grpc"]):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got["ws"][0], seq[0:4])
        np.testing.assert_array_equal(got["ws"][1], seq[4:8])
        # past the end: the last two actions, then no motion holding the last gripper command
        np.testing.assert_array_equal(got["http"][2][:2], seq[10:12])
        np.testing.assert_array_equal(got["http"][2][2:], np.tile([0, 0, 0, 0, 0, 0, 1.0], (2, 1)))
        with client(server, "grpc") as c:
            np.testing.assert_array_equal(c.infer(dict(obs, prompt="unknown task"))["actions"][:3], other)
            np.testing.assert_array_equal(c.infer(dict(obs, replay_key="*"))["actions"][:3], other)
            with pytest.raises(PolicyError) as err:
                c.infer(dict(obs, replay_step=np.float64(1.5)))
            assert err.value.code is ErrorCode.INVALID_ARGUMENT and "replay_step" in err.value.message
    finally:
        server.stop()


def test_http_json_body_gives_the_same_actions(noop_server, obs):
    body = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{noop_server.http_port}{protocol.INFER_PATH}", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        reply = json.loads(resp.read())
    np.testing.assert_array_equal(np.asarray(reply["actions"]), np.tile([0, 0, 0, 0, 0, 0, -1], (5, 1)))


def test_probes_and_metrics(noop_server, obs):
    base = f"http://127.0.0.1:{noop_server.http_port}"
    with urllib.request.urlopen(base + protocol.HEALTH_PATH, timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(base + protocol.READY_PATH, timeout=5) as r:
        assert r.status == 200
    with client(noop_server, "http") as c:
        c.infer(obs)
    with urllib.request.urlopen(base + protocol.METRICS_PATH, timeout=5) as r:
        text = r.read().decode()
    for name in ("policy_requests_total", "policy_request_duration_seconds", "policy_queue_duration_seconds",
                 "policy_compute_duration_seconds", "policy_batch_size", "policy_inflight_requests",
                 "policy_model_info"):
        assert name in text, name
    assert 'policy_requests_total{code="OK",transport="http"}' in text
    assert 'policy_model_info{checkpoint="",model="scripted:noop"} 1.0' in text


def test_grpc_health_and_reflection(noop_server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{noop_server.grpc_port}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=protocol.GRPC_SERVICE),
                                                      timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert protocol.GRPC_SERVICE in names and "grpc.health.v1.Health" in names


def test_readiness_waits_for_warmup():
    class SlowWarmup:
        def __init__(self):
            self.inner = make_scripted("noop")

        def info(self):
            return self.inner.info()

        def warmup_observation(self):
            time.sleep(0.6)
            return self.inner.warmup_observation()

        def prepare(self, obs):
            return self.inner.prepare(obs)

        def infer_batch(self, batch):
            return self.inner.infer_batch(batch)

        def close(self):
            pass

    from policy_server.server import PolicyServer
    from policy_server.service import ServiceConfig

    server = PolicyServer(SlowWarmup(), grpc_port=free_port(), http_port=free_port(),
                          service=ServiceConfig(token="")).start()
    try:
        c = client(server, "http")
        assert not c.is_ready()
        with pytest.raises(PolicyError) as err:
            c.infer(__import__("policy_server.schema").schema.example_observation(16, 16))
        assert err.value.code is ErrorCode.UNAVAILABLE and "warming up" in err.value.message
        assert not client(server, "grpc").is_ready()
        c.wait_ready(timeout_s=10, poll_s=0.05)
        assert client(server, "grpc").is_ready()
    finally:
        server.stop()


def test_cli_scripted_server_serves_and_exits_on_sigterm(tmp_path):
    gport, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--scripted", "noop", "--grpc-port",
                             str(gport), "--http-port", str(hport), "--chunk-length", "3"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        c = connect(f"grpc://127.0.0.1:{gport}", token="", retries=0)
        c.wait_ready(timeout_s=60, poll_s=0.1)
        from policy_server.schema import example_observation

        assert c.infer(example_observation(16, 16))["actions"].shape == (3, 7)
        c.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert "drained" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_replay_without_file():
    out = subprocess.run([sys.executable, "-m", "policy_server.cli", "--scripted", "replay"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--replay-file" in out.stderr


def test_websocket_reads_without_pausing_and_answers_pipelined_frames(noop_server, obs, monkeypatch):
    """The websocket pauses reading only past WS_QUEUE_HIGH unread messages: a client that waits
    for each reply never pauses it, and one that sends frames back to back still gets every reply."""
    from websockets.sync.client import connect as ws_connect

    from policy_server import http_transport
    from vla.wire import codec

    pauses = []
    made = http_transport.WebSocketProtocol.connection_made

    def counting(self, transport):
        pause = transport.pause_reading
        transport.pause_reading = lambda: (pauses.append(1), pause())[1]
        made(self, transport)

    monkeypatch.setattr(http_transport.WebSocketProtocol, "connection_made", counting)
    frame = codec.packb(obs)
    with ws_connect(f"ws://127.0.0.1:{noop_server.http_port}", max_size=None) as ws:
        codec.unpackb(ws.recv(timeout=10))   # ServerInfo
        for _ in range(10):
            ws.send(frame)
            assert codec.unpackb(ws.recv(timeout=10))["actions"].shape == (5, 7)
        assert pauses == []
        for _ in range(8):
            ws.send(frame)
        replies = [codec.unpackb(ws.recv(timeout=10)) for _ in range(8)]
    assert all(r["actions"].shape == (5, 7) for r in replies), replies


def test_an_idle_http_loop_wakes_once_a_second_not_ten_times(noop_server):
    """uvicorn's tick (Date header, exit check) runs once a second on the shared event loop: each
    wake-up of an idle loop is one that can meet, and delay, a request."""
    def switches() -> int:
        with open(f"/proc/self/task/{noop_server._http_thread.native_id}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))

    before = switches()
    time.sleep(2.0)
    woke = switches() - before
    assert woke <= 6, f"the idle event loop woke {woke} times in 2 s"   # ten ticks a second: ~20
