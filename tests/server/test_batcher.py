"""The batcher on its own: batches form up to max_batch_size, the policy never runs two batches
at once (worker and same-thread fast path share one lock), drain answers everything accepted."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from policy_server.batcher import Batcher, BatcherConfig
from policy_server.service import PolicyService, ServiceConfig
from vla.wire.errors import ErrorCode, PolicyError
from vla.wire.server_info import ServerInfo


class Recorder:
    """Echoes obs['i'] as the action; records batch sizes and the most concurrent calls seen."""

    def __init__(self, sleep_s: float = 0.02):
        self.sleep_s = sleep_s
        self.sizes: list[int] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def info(self):
        return ServerInfo(model="recorder", chunk_length=1, action_dim=1)

    def warmup_observation(self):
        return {"i": -1}

    def prepare(self, obs):
        return obs   # bare {"i": n} observations, no LIBERO schema

    def close(self):
        pass

    def infer_batch(self, batch):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.sleep_s)
        with self.lock:
            self.active -= 1
            self.sizes.append(len(batch))
        return [np.array([[obs["i"]]], dtype=np.float32) for obs in batch]


def _run_concurrently(fn, n):
    out = [None] * n
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return out


def test_batches_fill_up_and_each_request_gets_its_own_answer():
    policy = Recorder()
    b = Batcher(policy, BatcherConfig(max_batch_size=4, max_queue_delay_ms=50, max_queue_size=64))
    b.start()
    assert b.wait_ready(5)
    policy.sizes.clear()
    replies = _run_concurrently(lambda i: b.infer({"i": i}, timeout_s=10), 12)
    assert [float(r.actions[0, 0]) for r in replies] == list(range(12))
    assert max(policy.sizes) == 4 and sum(policy.sizes) == 12 and len(policy.sizes) <= 5
    assert all(r.batch_size >= 1 and r.compute_s > 0 for r in replies)
    b.stop()


def test_fast_path_and_worker_never_overlap():
    policy = Recorder(sleep_s=0.005)
    svc = PolicyService(policy, BatcherConfig(max_batch_size=4, max_queue_delay_ms=0, max_queue_size=256),
                        ServiceConfig(token=""))
    svc.start()
    assert svc.batcher.wait_ready(5)
    replies = _run_concurrently(lambda i: svc.handle({"i": i}, "grpc", f"r{i}"), 40)
    assert [float(r["actions"][0, 0]) for r in replies] == list(range(40))
    assert policy.max_active == 1
    svc.batcher.stop()


def test_drain_answers_accepted_requests_and_refuses_new_ones():
    policy = Recorder(sleep_s=0.1)
    b = Batcher(policy, BatcherConfig(max_batch_size=2, max_queue_delay_ms=0, max_queue_size=16))
    b.start()
    assert b.wait_ready(5)
    futures = [b.submit({"i": i}) for i in range(6)]
    assert b.drain(timeout_s=10)
    assert [float(f.result(0).actions[0, 0]) for f in futures] == list(range(6))
    with pytest.raises(PolicyError) as err:
        b.submit({"i": 99})
    assert err.value.code is ErrorCode.UNAVAILABLE and "draining" in err.value.message
    b.stop()


def test_config_is_checked():
    for bad in (dict(max_batch_size=0), dict(max_queue_size=0), dict(max_queue_delay_ms=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BatcherConfig(**bad)


class FakeClock:
    """The batcher's clock, moved only by the test: its decisions depend on this, not on real time."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Gate(Recorder):
    """A Recorder whose calls block until the test opens the gate; counts the calls that started."""

    def __init__(self):
        super().__init__(sleep_s=0.0)
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def infer_batch(self, batch):
        if batch[0]["i"] >= 0:   # not the warm-up
            self.started.release()
            assert self.gate.wait(20), "test never opened the gate"
        return super().infer_batch(batch)


# A window far longer than any test: if the batcher waited it out, the request would not be answered
# within the 10 s the tests allow; the flush reason says which rule started each batch.
LONG_WINDOW_MS = 600_000


def _batcher(policy, clock=None, **cfg):
    cfg = {"max_batch_size": 8, "max_queue_delay_ms": LONG_WINDOW_MS, "max_queue_size": 64, **cfg}
    b = Batcher(policy, BatcherConfig(**cfg), clock=clock or FakeClock())
    b.start()
    assert b.wait_ready(5)
    return b


@pytest.mark.parametrize("inline_ok", [True, False], ids=["caller-thread", "worker-thread"])
def test_a_lone_client_never_waits_for_the_window(inline_ok):
    """A client alone in a loop: each request runs the moment it is submitted, although the window
    is ten minutes and the clock never moves past it: on the caller's own thread when it may block."""
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    policy.sizes.clear()
    for i in range(20):
        b.announce()   # as the service does when a transport has the request
        reply = b.submit({"i": i}, f"r{i}", announced=True, inline_ok=inline_ok).result(10)
        expected = "idle" if inline_ok else "ready"
        assert (reply.flush, reply.batch_size, float(reply.actions[0, 0])) == (expected, 1, i)
    assert policy.sizes == [1] * 20
    b.stop()


def test_announce_says_whether_a_request_is_alone():
    """`announce` is True only for the client the last batch answered alone, nothing else queued,
    computing or being prepared: then the service skips its turn of the event loop."""
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    assert not b.announce("a")                     # no batch has answered anyone yet
    b.submit({"i": 0}, announced=True, inline_ok=True, client="a").result(10)
    assert b.announce("a")                         # a back on its own
    assert not b.announce("b")                     # b is new, and a is being prepared
    b.withdraw(), b.withdraw()
    b.submit({"i": 1}, inline_ok=True, client="b").result(10)
    assert not b.announce("a")                     # the last batch answered b, not a
    b.withdraw()
    assert not b.announce(None)                    # an anonymous client is never known to be alone
    b.stop()


def test_requests_that_arrive_during_a_compute_form_the_next_batch():
    policy = Gate()
    clock = FakeClock()
    b = _batcher(policy, clock)
    policy.sizes.clear()
    first = b.submit({"i": 0})
    assert policy.started.acquire(timeout=10)        # the model is busy with request 0 alone
    during = [b.submit({"i": i}) for i in range(1, 6)]
    policy.gate.set()
    assert first.result(10).flush == "ready"
    # Request 0's client comes back inside the window: the batch waited for it, and only for it.
    late = b.submit({"i": 6})
    replies = [f.result(10) for f in during + [late]]
    assert [float(r.actions[0, 0]) for r in replies] == list(range(1, 7))
    assert {(r.batch_size, r.flush) for r in replies} == {(6, "ready")}
    assert policy.sizes == [1, 6]
    b.stop()


def test_the_window_is_for_clients_just_answered_only_while_it_lasts():
    """Two clients that come back rarely (a sim stepping between chunks): once the window after the
    last batch has passed, a request does not wait for the other client; inside it, it does."""
    policy = Recorder(sleep_s=0.0)
    clock = FakeClock()
    b = _batcher(policy, clock, max_queue_delay_ms=5)
    policy.sizes.clear()
    assert b.submit({"i": 0}, inline_ok=True).result(10).flush == "idle"
    clock.now += 0.010   # 10 ms later: past the 5 ms window of the batch that answered request 0
    assert b.submit({"i": 1}, inline_ok=True).result(10).flush == "idle"
    b.announce()           # a second client is being prepared now: the next request may wait for it
    waiting = b.submit({"i": 2}, inline_ok=True)
    assert not waiting.done()
    b.submit({"i": 3}, announced=True)
    reply = waiting.result(10)
    assert (reply.batch_size, reply.flush) == (2, "ready")
    assert policy.sizes == [1, 1, 2]
    b.stop()


def test_a_withdrawn_announcement_releases_the_window():
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    b.announce()
    waiting = b.submit({"i": 0}, inline_ok=True)
    assert not waiting.done()
    b.withdraw()           # the announced request failed validation
    assert waiting.result(10).flush == "ready"
    b.stop()


def test_the_window_runs_out_when_an_expected_request_never_comes():
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy, time.monotonic, max_queue_delay_ms=20)
    b.announce()           # announced, never submitted
    assert b.submit({"i": 0}).result(10).flush == "window"
    b.stop()


def test_a_full_queue_starts_a_batch_at_once():
    policy = Gate()
    b = _batcher(policy, max_batch_size=4)
    first = b.submit({"i": 0})
    assert policy.started.acquire(timeout=10)
    for _ in range(10):
        b.announce()   # many more on their way: the window would wait for them
    queued = [b.submit({"i": i}, announced=True) for i in range(1, 5)]
    policy.gate.set()
    first.result(10)
    assert {(r.batch_size, r.flush) for r in (f.result(10) for f in queued)} == {(4, "full")}
    b.stop()


def test_batching_off_never_waits():
    """Announced requests do not hold a batch when batching is off: with a window of 0 the idle model
    runs the request on the caller's thread; with batches of 1 it starts as a full batch."""
    for cfg, flush in ((dict(max_queue_delay_ms=0), "idle"), (dict(max_batch_size=1), "full")):
        policy = Recorder(sleep_s=0.0)
        b = _batcher(policy, **cfg)
        b.announce()
        b.announce()
        assert b.submit({"i": 0}, announced=True, inline_ok=flush == "idle").result(10).flush == flush
        b.stop()


def test_clients_are_told_apart_by_connection():
    """After a batch answers client A, a request from a new client B does not count as A coming back:
    it waits (in the window) for A, and they share the next batch. A alone comes back and runs at once."""
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    policy.sizes.clear()
    assert b.submit({"i": 0}, client="A", inline_ok=True).result(10).flush == "idle"
    b.announce("A")
    assert b.runs_at_once()                     # A is back: nobody else is expected
    assert b.submit({"i": 1}, client="A", announced=True, inline_ok=True).result(10).flush == "idle"
    b.announce("B")
    assert not b.runs_at_once()                 # B is new; A, just answered, is still expected
    waiting = b.submit({"i": 2}, client="B", announced=True, inline_ok=True)
    assert not waiting.done()
    reply = b.submit({"i": 3}, client="A").result(10)
    assert (reply.batch_size, reply.flush, waiting.result(10).batch_size) == (2, "ready", 2)
    assert policy.sizes == [1, 1, 2]
    b.stop()


def test_clients_sharing_one_connection_are_each_expected_back():
    """grpc gives the channels one process opens to a server one shared connection, so a batch may
    answer several clients with the same peer. The first of them to come back is not all of them:
    it waits (in the window) for the other, and they share the next batch, as two connections do."""
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    b.announce("ipv4:127.0.0.1:5000"), b.announce("ipv4:127.0.0.1:5000")   # two clients, one connection
    pair = [b.submit({"i": i}, client="ipv4:127.0.0.1:5000", announced=True) for i in (1, 2)]
    assert {(r.batch_size, r.flush) for r in (f.result(10) for f in pair)} == {(2, "ready")}
    b.announce("ipv4:127.0.0.1:5000")
    assert not b.runs_at_once()                        # one of the two is back; the other is expected
    assert not b.announce("ipv4:127.0.0.1:5000")       # nor is the second one alone
    waiting = b.submit({"i": 3}, client="ipv4:127.0.0.1:5000", announced=True, inline_ok=True)
    assert not waiting.done()
    reply = b.submit({"i": 4}, client="ipv4:127.0.0.1:5000", announced=True).result(10)
    assert (reply.batch_size, reply.flush, waiting.result(10).batch_size) == (2, "ready", 2)
    b.stop()


def test_a_batch_wakes_its_event_loop_once_and_resolves_its_futures_there():
    """Requests awaited on an asyncio loop: the batch's replies reach that loop in one call on its
    own thread (one wake-up per batch, not a socket write and a GIL hand-over per request)."""
    import asyncio

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    calls, resolved_on = [], []
    real = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda fn, *args: calls.append(fn) or real(fn, *args)
    policy = Gate()
    b = _batcher(policy, FakeClock(), max_queue_delay_ms=0)
    try:
        first = b.submit({"i": 0})
        assert policy.started.acquire(timeout=10)      # the model busy: the next five queue up
        during = [b.submit({"i": i}, loop=loop) for i in range(1, 6)]
        for f in during:
            f.add_done_callback(lambda _: resolved_on.append(threading.current_thread()))
        policy.gate.set()
        first.result(10)
        replies = [f.result(10) for f in during]
        assert [float(r.actions[0, 0]) for r in replies] == [1, 2, 3, 4, 5] and replies[0].batch_size == 5
        assert len(calls) == 1, f"the batch woke the loop {len(calls)} times"
        assert resolved_on == [runner] * 5
    finally:
        b.stop()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def test_the_worker_is_woken_only_by_arrivals_that_change_its_decision():
    """Collecting a batch, the worker is woken by the first request, the one that fills the batch
    or the last one it waited for; not by every arrival in between (each a context switch and a
    GIL hand-over)."""
    policy = Recorder(sleep_s=0.0)
    b = _batcher(policy)
    policy.sizes.clear()
    wakes = []
    real = b._cond.notify_all
    b._cond.notify_all = lambda: wakes.append(len(b._queue)) or real()
    for _ in range(4):
        b.announce()                   # four requests being prepared: the window waits for all four
    futures = [b.submit({"i": i}, announced=True) for i in range(4)]
    replies = [f.result(10) for f in futures]
    assert {(r.batch_size, r.flush) for r in replies} == {(4, "ready")}
    assert wakes[:2] == [1, 4], wakes  # the first arrival, then the last expected one; not the 2nd or 3rd
    b.stop()


class CountingPrepare(Gate):
    """A Gate that counts its prepare() calls (the per-request work a refusal must not pay for)."""

    def __init__(self):
        super().__init__()
        self.prepared = 0

    def prepare(self, obs):
        with self.lock:
            self.prepared += 1
        return obs


def test_a_full_queue_refuses_before_the_request_is_prepared():
    """Admission comes first: with the queue full (queued requests and those still being prepared
    count), a request is refused with RESOURCE_EXHAUSTED, naming its request id, and its prepare()
    never runs: under overload refusals must not take the CPU the batches in hand need."""
    policy = CountingPrepare()
    svc = PolicyService(policy, BatcherConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2),
                        ServiceConfig(token=""))
    svc.start()
    assert svc.batcher.wait_ready(5)
    policy.prepared = 0
    results = {}
    workers = [threading.Thread(target=lambda i=i: results.__setitem__(i, svc.handle({"i": i}, "grpc", f"r{i}")))
               for i in range(3)]
    workers[0].start()
    assert policy.started.acquire(timeout=10)   # r0 computes (inline) and holds the model
    for t in workers[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while svc.batcher.pending() < 3 and time.monotonic() < deadline:   # r1 and r2 queued behind it
        time.sleep(0.01)
    assert svc.batcher.pending() == 3 and policy.prepared == 3
    with pytest.raises(PolicyError) as err:
        svc.handle({"i": 99}, "grpc", "refused")
    assert err.value.code is ErrorCode.RESOURCE_EXHAUSTED and err.value.request_id == "refused"
    assert "queue is full (2 requests waiting)" in err.value.message
    assert policy.prepared == 3   # the refused request was never prepared
    policy.gate.set()
    for t in workers:
        t.join(10)
    assert sorted(float(r["actions"][0, 0]) for r in results.values()) == [0.0, 1.0, 2.0]
    svc.batcher.stop()


def test_requests_being_prepared_hold_their_place_in_the_queue():
    b = _batcher(Recorder(sleep_s=0.0), max_queue_size=2)
    b.announce(request_id="a")
    b.announce(request_id="b")
    with pytest.raises(PolicyError) as err:
        b.announce(request_id="c")
    assert err.value.code is ErrorCode.RESOURCE_EXHAUSTED and err.value.request_id == "c"
    b.withdraw()   # "a" failed its prepare: its place is free again
    b.announce(request_id="d")
    b.stop()
