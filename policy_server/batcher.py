"""Dynamic batcher: one queue shared by every transport, one model worker thread.

A transport thread validates a request, then `submit()`s it and waits on the returned
Future (gRPC threads block on it; the asyncio side awaits it via asyncio.wrap_future).
The worker takes the oldest request, keeps collecting until `max_batch_size` requests are
in hand or `max_queue_delay_ms` has passed since that oldest one arrived or the worker came
free (whichever is later: the delay is how long an idle worker waits to fill a batch), drops the ones
whose deadline already passed (DEADLINE_EXCEEDED), and runs `policy.infer_batch` once.

A full queue refuses at once with RESOURCE_EXHAUSTED (back-pressure, not latency);
a draining or not-yet-ready batcher refuses with UNAVAILABLE.

Fast path (`infer_inline`, blocking callers only): when batching is off (`max_queue_delay_ms=0`
or `max_batch_size=1`) and the batcher is idle, the calling thread runs the batch of one
itself, saving two thread hand-offs. A compute lock keeps the policy single-threaded either way.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla.wire.errors import ErrorCode, PolicyError

log = logging.getLogger("policy_server.batcher")


@dataclass
class BatcherConfig:
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")


@dataclass
class Reply:
    actions: np.ndarray
    queue_s: float      # waiting in the queue
    compute_s: float    # the batch's infer_batch call
    batch_size: int


@dataclass
class _Item:
    obs: dict[str, Any]
    request_id: str
    deadline: float | None
    enqueued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, policy: Any, config: BatcherConfig | None = None, metrics: Any = None):
        self.policy = policy
        self.config = config or BatcherConfig()
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._accepting = False
        self._ready = threading.Event()
        self._busy = 0          # requests taken off the queue and not yet answered
        self._compute_lock = threading.Lock()   # one batch at a time, whoever runs it
        self._thread: threading.Thread | None = None
        self.warmup_s = 0.0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-batcher", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._accepting

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop_accepting(self) -> None:
        """Drain starts: new requests get UNAVAILABLE; queued ones still run."""
        with self._cond:
            self._accepting = False

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait until every accepted request has been answered."""
        self.stop_accepting()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._accepting = False
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in leftover:
            self._fail(item, PolicyError(ErrorCode.UNAVAILABLE, "server is shutting down", item.request_id))
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- requests ------------------------------------------------------------------
    def submit(self, obs: dict[str, Any], request_id: str = "", deadline: float | None = None) -> Future:
        """Queue one validated observation; the Future resolves to a Reply or raises PolicyError."""
        item = _Item(obs, request_id, deadline)
        with self._cond:
            if not self._accepting:
                why = "draining" if self._ready.is_set() else "warming up"
                raise PolicyError(ErrorCode.UNAVAILABLE, f"server is {why}; retry later", request_id)
            if len(self._queue) >= self.config.max_queue_size:
                raise PolicyError(ErrorCode.RESOURCE_EXHAUSTED,
                                  f"queue is full ({self.config.max_queue_size} requests waiting); back off",
                                  request_id)
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def infer_inline(self, obs: dict[str, Any], request_id: str = "", deadline: float | None = None) -> Reply | None:
        """Run one request on the calling thread if batching is off and nothing else is pending;
        None means "not now": submit() it instead."""
        cfg = self.config
        if cfg.max_queue_delay_ms > 0 and cfg.max_batch_size > 1:
            return None
        with self._cond:
            if not self._accepting or self._queue or self._busy:
                return None
            if not self._compute_lock.acquire(blocking=False):
                return None
            self._busy += 1
        item = _Item(obs, request_id, deadline)
        try:
            self._compute([item], time.monotonic())
        finally:
            self._compute_lock.release()
            self._done(1)
        return item.future.result(0)

    def infer(self, obs: dict[str, Any], request_id: str = "", timeout_s: float | None = None) -> Reply:
        """Submit and wait (for in-process callers and tests)."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        return self.submit(obs, request_id, deadline).result(timeout_s)

    # -- worker --------------------------------------------------------------------
    def _warmup(self) -> None:
        make = getattr(self.policy, "warmup_observation", None)
        if not self.config.warmup or make is None:
            return
        start = time.monotonic()
        obs = make()
        # Both the single and the full batch shape, so neither first real request pays for it.
        for size in sorted({1, self.config.max_batch_size}):
            self.policy.infer_batch([obs] * size)
        self.warmup_s = time.monotonic() - start
        log.info("warm-up done in %.2fs", self.warmup_s)

    def _run(self) -> None:
        try:
            self._warmup()
        except Exception:
            log.exception("warm-up failed; the server stays not ready")
            return
        with self._cond:
            self._accepting = not self._stopping
        self._ready.set()
        while True:
            batch = self._collect()
            if batch is None:
                return
            self._run_batch(batch)

    def _collect(self) -> list[_Item] | None:
        cfg = self.config
        free_at = time.monotonic()
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue[0]
            # The window opens when the oldest request arrived or when the worker came free,
            # whichever is later: requests that queued behind a running batch still get a chance
            # to be joined by the clients that batch just answered (no alternating half batches).
            flush_at = max(first.enqueued, free_at) + cfg.max_queue_delay_ms / 1000.0
            while len(self._queue) < cfg.max_batch_size and not self._stopping:
                left = flush_at - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(cfg.max_batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._busy += len(batch)
            return batch

    def _done(self, n: int) -> None:
        with self._cond:
            self._busy -= n
            self._cond.notify_all()

    @staticmethod
    def _fail(item: _Item, err: PolicyError) -> None:
        if not item.future.done():
            item.future.set_exception(err)

    def _run_batch(self, batch: list[_Item]) -> None:
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.cancelled():
                continue
            if item.deadline is not None and now >= item.deadline:
                self._fail(item, PolicyError(ErrorCode.DEADLINE_EXCEEDED,
                                             f"deadline passed after {now - item.enqueued:.3f}s in the queue",
                                             item.request_id))
            else:
                live.append(item)
        try:
            if live:
                with self._compute_lock:
                    self._compute(live, time.monotonic())
        finally:
            self._done(len(batch))

    def _compute(self, live: list[_Item], started: float) -> None:
        """Run one batch; the caller holds the compute lock."""
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
        try:
            outputs = self.policy.infer_batch([item.obs for item in live])
            if len(outputs) != len(live):
                raise RuntimeError(f"policy returned {len(outputs)} results for a batch of {len(live)}")
        except PolicyError as exc:
            for item in live:
                self._fail(item, PolicyError(exc.code, exc.message, item.request_id))
            return
        except Exception:
            ids = ",".join(item.request_id for item in live)
            log.exception("policy failed on a batch of %d (request ids: %s)", len(live), ids)
            for item in live:
                self._fail(item, PolicyError(ErrorCode.INTERNAL,
                                             "the policy failed; the server log has the details under this request id",
                                             item.request_id))
            return
        compute_s = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.compute.observe(compute_s)
        for item, out in zip(live, outputs):
            if isinstance(out, PolicyError):
                self._fail(item, PolicyError(out.code, out.message, item.request_id))
                continue
            if self.metrics is not None:
                self.metrics.queue.observe(started - item.enqueued)
            if not item.future.done():
                item.future.set_result(Reply(np.asarray(out, dtype=np.float32), started - item.enqueued,
                                             compute_s, len(live)))
