"""Bad input, auth, limits and faults: every error has its taxonomy code on every transport,
its message names the problem, no traceback leaks, and the server keeps serving."""
from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from policy_server.batcher import BatcherConfig
from policy_server.scripted import make_scripted
from policy_server.service import ServiceConfig
from tests.server.conftest import TRANSPORTS, client, start_server
from vla.wire import protocol
from vla.wire._gen import policy_pb2
from vla.wire.errors import TOO_LARGE, ErrorCode, PolicyError, RequestTooLarge

NOOP = np.tile([0, 0, 0, 0, 0, 0, -1], (5, 1))


def _expect(c, obs, code: ErrorCode, *fragments: str) -> PolicyError:
    with pytest.raises(PolicyError) as err:
        c.infer(obs)
    assert err.value.code is code, err.value
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message
    assert "Traceback" not in err.value.message
    return err.value


BAD_INPUTS = {
    "wrong_dtype": (lambda o: dict(o, agentview_image=o["agentview_image"].astype(np.float32)),
                    ("'agentview_image'", "uint8")),
    "wrong_shape": (lambda o: dict(o, robot0_eef_pos=np.zeros(2)), ("'robot0_eef_pos'", "shape")),
    "not_rgb": (lambda o: dict(o, robot0_eye_in_hand_image=np.zeros((8, 8, 4), np.uint8)),
                ("'robot0_eye_in_hand_image'", "shape")),
    "tiny_image": (lambda o: dict(o, agentview_image=np.zeros((1, 1, 3), np.uint8)),
                   ("'agentview_image'", "16..2048 pixels", "1x1")),
    "missing_key": (lambda o: {k: v for k, v in o.items() if k != "robot0_gripper_qpos"},
                    ("robot0_gripper_qpos", "missing")),
    "missing_prompt": (lambda o: {k: v for k, v in o.items() if k != "prompt"}, ("'prompt'",)),
    "nan": (lambda o: dict(o, robot0_eef_quat=np.array([np.nan, 0, 0, 1.0])), ("'robot0_eef_quat'", "NaN")),
    "no_known_keys": (lambda o: {"prompt": "x", "foo": np.zeros(3)}, ("none of the expected keys",)),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_the_key_and_the_server_keeps_serving(noop_server, obs, transport, case):
    make, fragments = BAD_INPUTS[case]
    before = _count(noop_server, transport, "INVALID_ARGUMENT")
    with client(noop_server, transport) as c:
        _expect(c, make(obs), ErrorCode.INVALID_ARGUMENT, *fragments)
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)   # same connection still works
    assert _count(noop_server, transport, "INVALID_ARGUMENT") == before + 1


def _count(server, transport: str, code: str) -> float:
    return server.service.metrics.registry.get_sample_value("policy_requests_total",
                                                            {"transport": transport, "code": code}) or 0.0


def _raw_post(server, body: bytes, ctype=protocol.MSGPACK_CONTENT_TYPE, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{protocol.INFER_PATH}", data=body,
                                 headers={"Content-Type": ctype, **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


OBJECT_ARRAY = msgpack.packb({"agentview_image": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O",
                                                  b"shape": [1]}, "prompt": "x"})
RAW_FRAMES = {
    "malformed_msgpack": (b"\xc1\xff\x00garbage", "malformed msgpack"),
    "object_array": (OBJECT_ARRAY, "refused dtype object"),
    "not_a_map": (msgpack.packb([1, 2, 3]), "must be a map"),
    "truncated_array": (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4",
                                             b"shape": [2]}}), "needs 8 bytes"),
}


@pytest.mark.parametrize("case", sorted(RAW_FRAMES))
def test_raw_bad_frames_http_and_ws(noop_server, obs, case):
    frame, fragment = RAW_FRAMES[case]
    status, body = _raw_post(noop_server, frame)
    error = msgpack.unpackb(body)["error"]
    assert status == 400 and error["code"] == "INVALID_ARGUMENT" and fragment in error["message"]
    with client(noop_server, "ws") as c:
        c.server_info()  # connects
        c._ws.send(frame)
        reply = c._ws.recv(timeout=10)
        assert isinstance(reply, str) and '"INVALID_ARGUMENT"' in reply and fragment in reply
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)


def test_object_dtype_and_bad_bytes_over_grpc(noop_server, obs):
    import grpc

    from vla.wire._gen import policy_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{noop_server.grpc_port}") as ch:
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        for tensor, fragment in ((policy_pb2.Tensor(dtype="|O", shape=[1], data=b"\0" * 8), "refused dtype"),
                                 (policy_pb2.Tensor(dtype="<f4", shape=[3], data=b"\0" * 5), "need 12 bytes"),
                                 (policy_pb2.Tensor(dtype="nonsense", shape=[1], data=b"\0"), "unknown dtype")):
            with pytest.raises(grpc.RpcError) as err:
                stub.Infer(policy_pb2.InferRequest(tensors={"robot0_eef_pos": tensor}), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.value.details()
    with client(noop_server, "grpc") as c:
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)


def test_http_rejects_unknown_content_type_and_bad_json(noop_server):
    status, body = _raw_post(noop_server, b"{}", ctype="text/plain")
    assert status == 400
    status, body = _raw_post(noop_server, b"{not json", ctype="application/json")
    assert status == 400 and b"malformed JSON" in body


def test_infer_fast_path_leaves_other_requests_to_fastapi(noop_server):
    """POST /v1/infer bypasses FastAPI's routing; every other method and path still reaches it."""
    import urllib.error

    base = f"http://127.0.0.1:{noop_server.http_port}"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}{protocol.INFER_PATH}", timeout=10)    # GET
    assert err.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"{base}/v1/nothing", data=b"", method="POST"), timeout=10)
    assert err.value.code == 404
    with urllib.request.urlopen(f"{base}{protocol.READY_PATH}", timeout=10) as r:
        assert json.loads(r.read()) == {"ready": True}


@pytest.fixture(scope="module")
def small_frame_server():
    server = start_server(make_scripted("noop", chunk_length=5), service=ServiceConfig(token="", max_message_bytes=64_000))
    yield server
    server.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_oversize_frame_is_resource_exhausted(small_frame_server, transport):
    from policy_server.schema import example_observation

    big = example_observation(128, 128)     # 2 x 49 KB images > 64 KB
    with client(small_frame_server, transport) as c:
        err = _expect(c, big, ErrorCode.RESOURCE_EXHAUSTED)
        assert "over the limit of 64000 bytes" in err.message and "--max-message-bytes" in err.message
        assert c.infer(example_observation(16, 16))["actions"].shape == (5, 7)


@pytest.mark.parametrize("side", [128, 400])   # under twice the limit (our handler), over it (the protocol layer)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_oversize_request_is_never_retried(small_frame_server, transport, side):
    """RESOURCE_EXHAUSTED for a request over the cap (gRPC's standard code; HTTP 413) says on the
    wire that it is not retryable, and the client raises it after one attempt, however many
    retries it may make: the same request can never fit."""
    from policy_server.schema import example_observation

    with client(small_frame_server, transport, retries=3, backoff_s=0.01) as c:
        attempts = []
        send = c._infer
        c._infer = lambda obs, rid: attempts.append(rid) or send(obs, rid)
        with pytest.raises(RequestTooLarge) as err:
            c.infer(example_observation(side, side))
        assert err.value.code is ErrorCode.RESOURCE_EXHAUSTED and err.value.reason == TOO_LARGE
        assert err.value.retryable is False
        assert len(attempts) == 1, f"the client retried a request over the size limit {len(attempts)} times"
        assert "--max-message-bytes" in err.value.message or "too big" in err.value.message, err.value.message
        assert c.infer(example_observation(16, 16))["actions"].shape == (5, 7)   # and it still serves


def test_oversize_error_wire_form_says_not_retryable(small_frame_server):
    """The HTTP body names the reason and `retryable: false`; a full queue's RESOURCE_EXHAUSTED
    stays retryable."""
    req = urllib.request.Request(f"http://127.0.0.1:{small_frame_server.http_port}{protocol.INFER_PATH}",
                                 data=msgpack.packb({"x": b"0" * 100_000}), method="POST",
                                 headers={"Content-Type": protocol.JSON_CONTENT_TYPE})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 413
    body = json.loads(err.value.read())["error"]
    assert body["code"] == "RESOURCE_EXHAUSTED" and body["retryable"] is False and body["reason"] == TOO_LARGE
    assert PolicyError.from_dict(body).retryable is False and isinstance(PolicyError.from_dict(body), RequestTooLarge)
    full = PolicyError(ErrorCode.RESOURCE_EXHAUSTED, "queue is full")
    assert full.retryable and full.to_dict()["retryable"] is True and PolicyError.from_dict(full.to_dict()).retryable


@pytest.fixture(scope="module")
def token_server():
    server = start_server(make_scripted("noop", chunk_length=5), service=ServiceConfig(token="s3cret-token"))
    yield server
    server.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_token_required_on_every_transport(token_server, obs, transport):
    for wrong in ("", "s3cret-tokeX", "s3cret"):
        with client(token_server, transport, token=wrong) as c:
            _expect(c, obs, ErrorCode.UNAUTHENTICATED)
    with client(token_server, transport, token="s3cret-token") as c:
        assert c.server_info().model == "scripted:noop"
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)


def test_openpi_api_key_header_and_env_token(token_server, obs, monkeypatch):
    from vla.wire import codec

    status, _ = _raw_post(token_server, codec.packb(obs), headers={"Authorization": "Api-Key s3cret-token"})
    assert status == 200
    status, body = _raw_post(token_server, codec.packb(obs), headers={"Authorization": "Api-Key nope"})
    assert status == 401 and codec.unpackb(body)["error"]["code"] == "UNAUTHENTICATED"
    monkeypatch.setenv(protocol.TOKEN_ENV, "s3cret-token")
    from vla.wire import connect

    with connect(f"ws://127.0.0.1:{token_server.http_port}", retries=0) as c:   # token from the environment
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)


@pytest.fixture(scope="module")
def fault_server():
    server = start_server(make_scripted("fault", chunk_length=5),
                          batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=30, max_queue_size=8))
    yield server
    server.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_scripted_faults_map_to_codes_and_hide_tracebacks(fault_server, obs, transport, caplog):
    with client(fault_server, transport) as c:
        for code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"):
            _expect(c, dict(obs, fault=code), ErrorCode(code), "scripted")
        with caplog.at_level(logging.ERROR, logger="policy_server"):
            err = _expect(c, dict(obs, fault="CRASH"), ErrorCode.INTERNAL, "server log")
        assert "scripted crash" not in err.message
        assert any(r.exc_info and "scripted crash" in str(r.exc_info[1]) for r in caplog.records)
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)


@pytest.fixture(scope="module")
def slow_server():
    """A model that takes 400 ms a batch (its warm-up shows it: nothing runs on the event loop)."""
    server = start_server(make_scripted("noop", chunk_length=5, compute_ms=400),
                          batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=30, max_queue_size=8))
    yield server
    server.stop()


def test_full_queue_refuses_at_once_and_deadline_expires(slow_server, obs):
    results, lock = [], threading.Lock()

    def call(transport):
        with client(slow_server, transport, timeout_s=10) as c:
            try:
                c.infer(obs)
                out = "OK"
            except PolicyError as exc:
                out = exc.code.value
        with lock:
            results.append(out)

    threads = [threading.Thread(target=call, args=(TRANSPORTS[i % 3],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # 8 queued (of which the worker takes 4 per batch) at most while a batch runs: the rest are refused.
    assert len(results) == 20 and results.count("RESOURCE_EXHAUSTED") >= 20 - 8 - 4, results
    assert set(results) <= {"OK", "RESOURCE_EXHAUSTED"} and "OK" in results
    with client(slow_server, "grpc", timeout_s=0.2) as c:
        # the first request occupies the worker; the second's deadline passes in the queue
        blocker = threading.Thread(target=call, args=("http",))
        blocker.start()
        import time

        time.sleep(0.05)
        _expect(c, obs, ErrorCode.DEADLINE_EXCEEDED)
        blocker.join(10)


def test_concurrent_requests_share_batches(fault_server, obs):
    sizes = []

    def call(transport):
        with client(fault_server, transport) as c:
            try:
                sizes.append(c.infer(dict(obs, sleep_ms=np.int64(50)))["server_timing"])
            except PolicyError as exc:
                sizes.append({"batch_size": 0, "error": str(exc)})

    threads = [threading.Thread(target=call, args=(t,)) for t in ("http", "ws", "http", "ws")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(sizes) == 4 and min(s["batch_size"] for s in sizes) >= 1, sizes
    assert max(s["batch_size"] for s in sizes) >= 2, sizes


@pytest.mark.parametrize("status, code", [("CANCELLED", ErrorCode.UNAVAILABLE), ("ABORTED", ErrorCode.UNAVAILABLE),
                                          ("UNKNOWN", ErrorCode.INTERNAL), ("RESOURCE_EXHAUSTED", ErrorCode.RESOURCE_EXHAUSTED)])
def test_grpc_statuses_outside_the_taxonomy_map_to_a_retry_decision(noop_server, status, code):
    """A call the server cancelled while stopping (grpc's stop(grace) cancels what it has not
    answered: the soak's drain saw it) is UNAVAILABLE, to retry elsewhere, not a server bug."""
    import grpc

    class Failed(grpc.RpcError):
        def code(self):
            return getattr(grpc.StatusCode, status)

        def details(self):
            return status.title()

        def trailing_metadata(self):
            return ()

    with client(noop_server, "grpc", retries=0) as c:
        stub = c._connect()
        stub.InferRaw = lambda *a, **k: (_ for _ in ()).throw(Failed())
        err = _expect(c, {"prompt": "x"}, code)
        assert err.retryable is (code is not ErrorCode.INTERNAL)
