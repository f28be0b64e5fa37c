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


class Recorder:
    """Echoes obs['i'] as the action; records batch sizes and the most concurrent calls seen."""

    def __init__(self, sleep_s: float = 0.02):
        self.sleep_s = sleep_s
        self.sizes: list[int] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def info(self):
        return {"model": "recorder", "chunk_length": 1, "action_dim": 1}

    def warmup_observation(self):
        return {"i": -1}

    def validate(self, obs):
        return obs   # bare {"i": n} observations, no LIBERO schema

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
