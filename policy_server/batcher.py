"""Dynamic batcher: one queue shared by every transport, one model at a time.

A transport `announce()`s a request as soon as it has one, prepares it (`policy.prepare`:
schema check, transforms), then `submit()`s it and waits on the returned Future (gRPC threads block on it;
the asyncio side awaits it via asyncio.wrap_future).

Batching costs a lone request nothing:

* When the model is idle and no other request is known to be on its way, a request runs at
  once: on the submitting thread itself if it may block (`inline_ok`, no hand-off at all),
  else on the worker thread.
* Requests that arrive while the model computes queue up and form the next batch (up to
  `max_batch_size`).
* The wait window (`max_queue_delay_ms`) applies only when waiting can fill the batch: while
  other requests are known to be coming. Two kinds are known: requests announced by a transport
  and still being prepared, and, for one window after a batch is answered, the clients that
  batch just answered (clients in a loop send their next request at once). The window opens
  when the oldest queued request arrived or when the model came free, whichever is later, and
  closes early as soon as every request it waits for has arrived.
* With batching off (`max_queue_delay_ms=0` or `max_batch_size=1`) nothing is ever waited for.

Each reply says why its batch started (`Reply.flush`): "idle" (run at once on the submitting
thread), "ready" (nothing more was expected: every expected request had come, or none was),
"full" (`max_batch_size` in hand) or "window" (it ran out with requests still expected).

A full queue refuses at once with RESOURCE_EXHAUSTED (back-pressure, not latency), at
`announce`, before the request's prepare runs: requests being prepared count against
`max_queue_size`, and a refusal costs no image transforms; a draining
or not-yet-ready batcher refuses with UNAVAILABLE; a request whose deadline passes in the
queue gets DEADLINE_EXCEEDED.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from vla.errors import VLAError
from vla.wire.errors import ErrorCode, PolicyError

log = logging.getLogger("policy_server.batcher")


class WarmupError(VLAError, RuntimeError):
    """Warm-up - a valid LIBERO-size observation through prepare() and infer_batch(), as a request -
    failed: the server's own files (statistics, config, tokenizer, checkpoint) do not fit each other,
    so it must not report ready. The CLI exits 2 with this message."""

FLUSH_REASONS = ("idle", "ready", "full", "window")


@dataclass
class BatcherConfig:
    max_batch_size: int = 8
    max_queue_delay_ms: float = 10.0
    max_queue_size: int = 256
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1 and self.max_queue_delay_ms > 0


@dataclass
class Reply:
    actions: np.ndarray
    queue_s: float      # waiting in the queue
    compute_s: float    # the batch's infer_batch call
    batch_size: int
    flush: str = "idle"  # why the batch started (FLUSH_REASONS)


@dataclass
class _Item:
    obs: dict[str, Any]
    request_id: str
    deadline: float | None
    enqueued: float
    client: Any = None   # the connection it came on (transport-defined), None if unknown
    loop: Any = None     # the asyncio loop whose thread awaits it (its future is resolved there), else None
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, policy: Any, config: BatcherConfig | None = None, metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.config = config or BatcherConfig()
        self.metrics = metrics
        self.clock = clock
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._accepting = False
        self._ready = threading.Event()
        self._busy = 0          # requests taken off the queue and not yet answered
        self._computing = False  # a batch is running (worker or inline): one at a time
        self._arriving = 0      # announced by a transport, not yet submitted or withdrawn
        # Requests the last batch answered whose clients have not come back yet, counted per connection
        # when the transport names it (one gRPC connection may carry many clients: grpc shares one
        # connection between the channels a process opens to the same server), else only counted
        # (anonymous clients are assumed to be the ones back).
        self._answered: collections.Counter[Any] = collections.Counter()
        self._answered_anon = 0
        self._free_at = float("-inf")   # when the last batch ended
        self._solo_s = float("inf")     # how long a batch of one takes (moving average)
        self._thread: threading.Thread | None = None
        self.warmup_s = 0.0
        self.prepare_s = float("inf")   # the policy's prepare() on the warm-up observation
        self.failure: WarmupError | None = None   # why warm-up failed: the server never becomes ready

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-batcher", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._accepting and self.failure is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once warm-up succeeded; False on timeout or when it failed (see `failure`)."""
        return self._ready.wait(timeout) and self.failure is None

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
    def announce(self, client: Any = None, request_id: str = "") -> bool:
        """A transport has a request it is preparing: a batch may wait for it (see the module doc).
        `client` names the connection it came on (None: unknown). Follow with
        `submit(..., announced=True)` or `withdraw()`. Raises RESOURCE_EXHAUSTED (nothing to
        withdraw) when the queue, with the requests being prepared, is full.

        Returns whether the request is alone as far as the batcher can tell: the last batch
        answered this client and no other, and nothing is queued, computing or being prepared
        (a client in a loop by itself; see `PolicyService.ahandle`)."""
        with self._cond:
            alone = (client is not None and self._answered.total() == 1 and self._answered[client] == 1
                     and not self._answered_anon and not self._arriving and not self._queue
                     and not self._computing)
            self._back_locked(client)
            # Admission before any work: a request that would find the queue full once prepared is
            # refused now, before its prepare (schema check, image transforms) takes CPU and the GIL
            # from the batches being computed. Requests still being prepared hold their place.
            if len(self._queue) + self._arriving >= self.config.max_queue_size:
                raise self._queue_full(request_id)
            self._arriving += 1
            return alone

    def _queue_full(self, request_id: str = "") -> PolicyError:
        return PolicyError(ErrorCode.RESOURCE_EXHAUSTED,
                           f"queue is full ({self.config.max_queue_size} requests waiting); back off", request_id)

    def _back_locked(self, client: Any) -> None:
        """A request from `client` arrived: if the last batch answered it, one of its requests is
        expected no more."""
        if client is not None:
            if self._answered[client] > 1:
                self._answered[client] -= 1
            else:
                self._answered.pop(client, None)
        elif self._answered_anon:
            self._answered_anon -= 1

    def runs_at_once(self, within_s: float = float("inf")) -> bool:
        """Would the caller's announced request run the moment it is submitted (the model idle,
        nothing queued, no other request expected), and have batches of one lately taken no
        longer than `within_s`? Then the caller may as well run it on its own thread."""
        with self._cond:
            return (self._accepting and not self._queue and not self._computing
                    and self._solo_s <= within_s and self._expected_locked(self.clock()) <= 1)

    def withdraw(self) -> None:
        """An announced request failed before it was submitted."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    def _expected_locked(self, now: float) -> int:
        """Requests a batch could still wait for: announced ones, and the clients the last batch
        answered while its window lasts. Zero when batching is off."""
        if not self.config.batching:
            return 0
        in_window = now < self._free_at + self.config.max_queue_delay_ms / 1000.0
        back = self._answered.total() + self._answered_anon if in_window else 0
        return self._arriving + back

    def submit(self, obs: dict[str, Any], request_id: str = "", deadline: float | None = None, *,
               announced: bool = False, inline_ok: bool = False, client: Any = None, loop: Any = None) -> Future:
        """Queue one prepared sample (the policy's `prepare` result); the Future resolves to a Reply or raises PolicyError.

        `inline_ok`: the caller may block, so if the model is idle and nothing else is expected
        the batch of one runs on this thread and the Future comes back already resolved.
        `loop`: the asyncio loop that awaits the Future. A batch's futures for one loop are
        resolved on that loop's thread in one call: one wake-up of the loop per batch, where one
        per request had the model's thread give up the GIL to the loop it had just woken (each
        wake-up is a socket write) and wait to get it back before the next batch."""
        now = self.clock()
        item = _Item(obs, request_id, deadline, now, client, loop)
        with self._cond:
            if announced:
                self._arriving -= 1
            else:
                self._back_locked(client)
            if not self._accepting:
                why = ("not serving: its warm-up failed" if self.failure is not None
                       else "draining" if self._ready.is_set() else "warming up")
                raise PolicyError(ErrorCode.UNAVAILABLE, f"server is {why}; retry later", request_id)
            inline = (inline_ok and not self._queue and not self._computing and not self._stopping
                      and self._expected_locked(now) == 0)
            if inline:
                self._computing = True
                self._busy += 1
            else:
                if len(self._queue) >= self.config.max_queue_size:
                    raise self._queue_full(request_id)
                self._queue.append(item)
                # Wake the worker only when this arrival can change its decision: the first request
                # to collect, a full batch, or the last one the window waited for. Others only lengthen
                # the queue it is about to take anyway; waking it for each one cost a context switch and
                # a GIL hand-over per request (the window's end it times by itself).
                if (len(self._queue) == 1 or len(self._queue) >= self.config.max_batch_size
                        or self._expected_locked(now) == 0):
                    self._cond.notify_all()
        if inline:
            self._run_batch([item], "idle")
        return item.future

    def infer(self, obs: dict[str, Any], request_id: str = "", timeout_s: float | None = None) -> Reply:
        """Submit and wait (for in-process callers and tests)."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        return self.submit(obs, request_id, deadline).result(timeout_s)

    # -- worker --------------------------------------------------------------------
    def _warmup(self) -> None:
        if not self.config.warmup:
            return
        start = time.monotonic()
        # The request path: prepare() (timed: the service runs a slow one off the event loop), then
        # infer_batch() for both the single and the full batch shape, so neither first real request
        # pays for it.
        try:
            sample = self.policy.prepare(self.policy.warmup_observation())
        except PolicyError as exc:   # the server's own files refuse a valid observation
            raise WarmupError(f"the warm-up observation (LIBERO-size, valid) was refused: {exc.message}") from None
        # Timed warm, the fastest of five: the first call pays for lazy initialisation (the tiny
        # π0's: 1-1.6 ms, then 0.15-0.4 ms), and a call the scheduler preempted on a busy machine
        # says nothing of the work; either would send every request's prepare to a prep thread.
        times = []
        for _ in range(5):
            obs = self.policy.warmup_observation()
            t0 = time.monotonic()
            self.policy.prepare(obs)
            times.append(time.monotonic() - t0)
        self.prepare_s = min(times)
        for size in sorted({1, self.config.max_batch_size}):
            replies = self.policy.infer_batch([sample] * size)
            failed = [r for r in replies if isinstance(r, PolicyError)]
            if failed or len(replies) != size:
                why = failed[0].message if failed else f"{len(replies)} replies for a batch of {size}"
                raise WarmupError(f"the warm-up batch of {size} failed: {why}")
        # A batch of one once more, timed: the first call above paid for lazy initialisation.
        t0 = time.monotonic()
        self.policy.infer_batch([sample])
        self._solo_s = time.monotonic() - t0
        self.warmup_s = time.monotonic() - start
        log.info("warm-up done in %.2fs (prepare: %.2f ms, a batch of one: %.1f ms)", self.warmup_s,
                 self.prepare_s * 1000, self._solo_s * 1000)

    def _run(self) -> None:
        try:
            self._warmup()
        except WarmupError as exc:
            self.failure = exc
            log.error("warm-up failed: %s", exc)
            self._ready.set()   # wake whoever waits for readiness; `ready` stays false
            return
        except Exception as exc:  # noqa: BLE001 - a bug in the policy: keep its traceback in the log
            self.failure = WarmupError(f"the warm-up request raised {type(exc).__name__}: {exc}")
            log.exception("warm-up failed; the server stays not ready")
            self._ready.set()
            return
        with self._cond:
            self._accepting = not self._stopping
        self._ready.set()
        while True:
            collected = self._collect()
            if collected is None:
                return
            self._run_batch(*collected)

    def _collect(self) -> tuple[list[_Item], str] | None:
        cfg = self.config
        with self._cond:
            while not self._queue or self._computing:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue[0]
            flush_at = max(first.enqueued, self._free_at) + cfg.max_queue_delay_ms / 1000.0
            while True:
                now = self.clock()
                if len(self._queue) >= cfg.max_batch_size:
                    why = "full"
                    break
                if self._stopping or self._expected_locked(now) == 0:
                    why = "ready"
                    break
                left = flush_at - now
                if left <= 0:
                    why = "window"
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(cfg.max_batch_size, len(self._queue)))]
            self._busy += len(batch)
            self._computing = True
            return batch, why

    @staticmethod
    def _fail(item: _Item, err: PolicyError) -> None:
        if not item.future.done():
            item.future.set_exception(err)

    def _run_batch(self, batch: list[_Item], why: str) -> None:
        """Run one collected batch; the caller has set `_computing`. The batcher's state is
        updated before any future resolves, so a client that sends its next request the moment
        it has its reply is already counted as answered-and-back."""
        now = self.clock()
        live, outcomes = [], []
        for item in batch:
            if item.future.cancelled():
                continue
            if item.deadline is not None and time.monotonic() >= item.deadline:
                outcomes.append((item, PolicyError(ErrorCode.DEADLINE_EXCEEDED,
                                                   f"deadline passed after {now - item.enqueued:.3f}s in the queue",
                                                   item.request_id)))
            else:
                live.append(item)
        try:
            if live:
                outcomes += self._compute(live, now, why)
        finally:
            with self._cond:
                self._computing = False
                self._free_at = self.clock()
                self._answered = collections.Counter(item.client for item in live if item.client is not None)
                self._answered_anon = sum(item.client is None for item in live)
                self._busy -= len(batch)
                # Wake the worker only if it has a batch to collect (or a drain is waiting): a lone
                # request answered inline must not cost a wake-up of the idle worker thread, which
                # would compete for the GIL with the thread sending the reply.
                if self._queue or not self._accepting:
                    self._cond.notify_all()
            on_loops: dict[Any, list[tuple[_Item, Reply | PolicyError]]] = {}
            for item, outcome in outcomes:
                if item.loop is None:
                    _resolve(item, outcome)
                else:
                    on_loops.setdefault(item.loop, []).append((item, outcome))
            for loop, pairs in on_loops.items():
                if _running_loop() is loop:     # the batch ran inline on that loop's own thread
                    _resolve_all(pairs)
                    continue
                try:
                    loop.call_soon_threadsafe(_resolve_all, pairs)
                except RuntimeError:   # the loop is closed (shutdown): nobody awaits there any more
                    _resolve_all(pairs)

    def _compute(self, live: list[_Item], started: float, why: str) -> list[tuple[_Item, Reply | PolicyError]]:
        """One infer_batch call; returns each request's Reply or PolicyError (never raises)."""
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
        t0 = time.monotonic()
        try:
            outputs = self.policy.infer_batch([item.obs for item in live])
            if len(outputs) != len(live):
                raise RuntimeError(f"policy returned {len(outputs)} results for a batch of {len(live)}")
        except PolicyError as exc:
            return [(item, exc.for_request(item.request_id)) for item in live]
        except Exception:
            ids = ",".join(item.request_id for item in live)
            log.exception("policy failed on a batch of %d (request ids: %s)", len(live), ids)
            return [(item, PolicyError(ErrorCode.INTERNAL,
                                       "the policy failed; the server log has the details under this request id",
                                       item.request_id)) for item in live]
        compute_s = time.monotonic() - t0
        if len(live) == 1:
            self._solo_s = compute_s if self._solo_s == float("inf") else 0.8 * self._solo_s + 0.2 * compute_s
        if self.metrics is not None:
            self.metrics.compute.observe(compute_s)
        outcomes: list[tuple[_Item, Reply | PolicyError]] = []
        for item, out in zip(live, outputs):
            if isinstance(out, PolicyError):
                outcomes.append((item, out.for_request(item.request_id)))
                continue
            queue_s = max(started - item.enqueued, 0.0)
            if self.metrics is not None:
                self.metrics.queue.observe(queue_s)
            outcomes.append((item, Reply(np.asarray(out, dtype=np.float32), queue_s, compute_s, len(live), why)))
        return outcomes


def _resolve(item: _Item, outcome: Reply | PolicyError) -> None:
    if item.future.done():
        return
    if isinstance(outcome, PolicyError):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)


def _resolve_all(pairs: list[tuple[_Item, Reply | PolicyError]]) -> None:
    for item, outcome in pairs:
        _resolve(item, outcome)


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
