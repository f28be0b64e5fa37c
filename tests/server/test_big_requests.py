"""Large requests: the body cap names itself and the flag, and a large body is decoded off the
event loop, so the loop keeps answering (/healthz) while it is parsed."""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from policy_server import bodies, schema
from policy_server.scripted import make_scripted
from policy_server.service import OFFLOAD_BYTES, PARSE_NICE, ServiceConfig
from tests.server.conftest import client, start_server
from vla.wire import protocol

NOOP = np.tile([0, 0, 0, 0, 0, 0, -1], (5, 1))


@pytest.fixture(scope="module")
def server():
    server = start_server(make_scripted("noop", chunk_length=5), service=ServiceConfig(token=""))
    yield server
    server.stop()


def _post_json(server, body: bytes, timeout: float = 30):
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{protocol.INFER_PATH}", data=body,
                                 headers={"Content-Type": protocol.JSON_CONTENT_TYPE}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _json_body(side: int) -> bytes:
    obs = schema.example_observation(side, side)
    return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}).encode()


def test_default_cap_is_a_few_mib_and_an_oversized_json_body_is_413(server):
    assert server.service.config.max_message_bytes == protocol.DEFAULT_MAX_REQUEST_BYTES == 8 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.putrequest("POST", protocol.INFER_PATH)     # the server answers from the header, before the body
    conn.putheader("Content-Type", protocol.JSON_CONTENT_TYPE)
    conn.putheader("Content-Length", str(protocol.DEFAULT_MAX_REQUEST_BYTES + 1))
    conn.endheaders()
    resp = conn.getresponse()
    status, reply = resp.status, json.loads(resp.read())
    conn.close()
    assert status == 413, reply
    assert reply["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert f"over the limit of {8 * 1024 * 1024} bytes" in reply["error"]["message"]
    assert "--max-message-bytes" in reply["error"]["message"]
    status, reply = _post_json(server, _json_body(64))    # the server keeps answering
    assert status == 200 and np.array_equal(reply["actions"], NOOP)


def test_healthz_answers_while_a_large_body_is_decoded(server, monkeypatch):
    body = _json_body(400)            # ~2.5 MB of JSON: over OFFLOAD_BYTES, under the cap
    assert OFFLOAD_BYTES < len(body) < server.service.config.max_message_bytes
    entered, release = threading.Event(), threading.Event()
    held = {}
    real = schema.parse_json

    def held_parse(data):
        entered.set()
        held["timed_out"] = not release.wait(20)   # True only if /healthz could not answer meanwhile
        return real(data)

    # The large body's parser, held until /healthz has answered (in-process, so the test can hold it;
    # the server runs it in a worker process).
    monkeypatch.setattr(schema, "parse_json", held_parse)
    monkeypatch.setattr(server.service, "_parse_procs", concurrent.futures.ThreadPoolExecutor(1))
    result = {}
    big = threading.Thread(target=lambda: result.update(reply=_post_json(server, body)))
    big.start()
    try:
        assert entered.wait(20), "the large request never reached its decode"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{protocol.HEALTH_PATH}", timeout=30) as r:
            assert r.status == 200
        # /healthz answered while the decode was still held: the loop was not waiting on it
        assert not release.is_set() and "timed_out" not in held
    finally:
        release.set()
        big.join(30)
    assert held["timed_out"] is False
    status, reply = result["reply"]
    assert status == 200 and np.array_equal(reply["actions"], NOOP)


def test_large_json_body_is_parsed_in_a_worker_process(server):
    status, reply = _post_json(server, _json_body(400))
    assert status == 200 and np.array_equal(reply["actions"], NOOP)
    assert server.service._parse_procs is not None
    bad = _json_body(400)[:-10] + b" ]]]]]]]]]"        # large and malformed: the worker's error comes back
    status, reply = _post_json(server, bad)
    assert status == 400 and reply["error"]["code"] == "INVALID_ARGUMENT"
    assert "malformed JSON body" in reply["error"]["message"]
    tiny = json.loads(_json_body(400))
    tiny["agentview_image"] = [[[0, 0, 0]]]
    status, reply = _post_json(server, json.dumps(tiny).encode())
    assert status == 400 and "'agentview_image'" in reply["error"]["message"] and "16" in reply["error"]["message"]


def test_large_websocket_frame_is_answered(server):
    obs = schema.example_observation(700, 700)     # ~2.9 MB msgpack: decoded and prepared on a prep thread
    with client(server, "ws") as c:
        np.testing.assert_array_equal(c.infer(obs)["actions"], NOOP)
        np.testing.assert_array_equal(c.infer(schema.example_observation(32, 32))["actions"], NOOP)


def _shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("psm_")} if Path("/dev/shm").is_dir() else set()


def test_large_json_body_goes_to_the_parser_in_shared_memory(server):
    """The body is read into one buffer in shared memory, which the parse process reads in place
    (no copy pickled through a pipe), and the segment is gone afterwards, also when parsing fails;
    the parse process runs below the server's priority."""
    before = _shm_segments()
    seen = []
    real = bodies.RequestBody.open

    def spy(length, max_bytes, *, shared=False):
        body = real(length, max_bytes, shared=shared)
        seen.append(body.shared)
        return body

    import policy_server.http_transport as http_transport
    mp = pytest.MonkeyPatch()
    mp.setattr(http_transport.RequestBody, "open", staticmethod(spy))
    try:
        status, reply = _post_json(server, _json_body(400))
        assert status == 200 and np.array_equal(reply["actions"], NOOP)
        status, reply = _post_json(server, _json_body(400)[:-10] + b" ]]]]]]]]]")
        assert status == 400 and "malformed JSON body" in reply["error"]["message"]
    finally:
        mp.undo()
    assert seen == [True, True]
    assert _shm_segments() <= before, "a request's shared memory segment was left behind"
    procs = server.service._parse_procs._processes
    assert procs and all(os.getpriority(os.PRIO_PROCESS, pid) >= min(os.getpriority(os.PRIO_PROCESS, 0) + PARSE_NICE, 19)
                         for pid in procs)


def test_request_body_fills_one_buffer():
    body = bodies.RequestBody.open(10, 100)
    body.add(b"01234")
    body.add(b"56789")
    assert isinstance(body.data(), bytearray) and body.data() == b"0123456789" and len(body) == 10
    with pytest.raises(bodies.BodyTooLong):
        body.add(b"x")                       # past its Content-Length
    body.close()
    grown = bodies.RequestBody.open(None, 8)   # chunked: no length known, the cap still holds
    grown.add(b"0123")
    grown.add(b"4567")
    assert grown.data() == b"01234567"
    with pytest.raises(bodies.BodyTooLong):
        grown.add(b"8")
    shared = bodies.RequestBody.open(4, 100, shared=True)
    shared.add(b"[1]\n")
    assert bodies.read_shared(shared.name, len(shared), bytes) == b"[1]\n"
    shared.close()
