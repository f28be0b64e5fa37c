"""The transport-independent request path: auth, policy.prepare, batching, metrics, replies.

Every transport (gRPC, HTTP, websocket) calls `handle` / `ahandle` with a decoded
observation. The service runs the policy's `prepare` off the model's thread (the policy
contract, policy_server/policy.py), queues the sample on the batcher and builds the reply dict,
`server_timing` included; the transport turns that dict or the PolicyError into its own wire
form. Anything that is not a PolicyError is a server bug: it is logged with the request id and the client
gets INTERNAL without a traceback.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import multiprocessing
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from policy_server import schema
from policy_server.batcher import Batcher, BatcherConfig, Reply
from policy_server.bodies import RequestBody, read_shared
from policy_server.metrics import Metrics
from policy_server.policy import Policy
from vla.wire import codec, protocol
from vla.wire.errors import ErrorCode, PolicyError, RequestTooLarge
from vla.wire.server_info import ServerInfo

log = logging.getLogger("policy_server")

# The longest the policy's prepare() may take (timed at warm-up) to run on the event loop rather
# than on a prep thread. Handing a request to a thread and back costs 0.1-0.5 ms on a busy
# machine; holding the loop for less than that delays no other connection by more.
LOOP_BUDGET_S = 0.0005
# Request bodies above this size are decoded and validated on the prep threads, not the event loop:
# a LIBERO-size msgpack body (~0.4 MB) decodes in well under a millisecond, a 50 MB JSON body takes seconds.
OFFLOAD_BYTES = 1024 * 1024
# The CLI flag that sets ServiceConfig.max_message_bytes (named in the RESOURCE_EXHAUSTED message).
LIMIT_FLAG = "--max-message-bytes"

# The longest a batch of one may take (moving average) for a lone HTTP/websocket request, nothing
# else queued or expected, to run on the event loop itself, as openpi's server runs every request:
# it then costs no thread hand-off (0.1-0.5 ms on a busy machine). The loop is held only when there
# is nobody else to serve; a client that arrives meanwhile is read when the batch ends, and since
# it is not the client just answered (the batcher tells them by connection) it then waits for that
# one in the window and they batch together.
LONE_LOOP_BUDGET_S = 0.020


# How far below the server's priority the JSON parse process runs (nice): a 50 MB body is seconds
# of CPU, which on a machine with few cores must not be taken from the threads answering everyone
# else. +5 weighs it a third of the server's threads; +10 starved it for tens of seconds whenever
# other processes kept the cores busy.
PARSE_NICE = 5


def _parse_process_init() -> None:
    os.nice(PARSE_NICE)


# Request ids (16 hex digits) from a generator of the service's own, seeded from os.urandom when the
# module loads: no getrandom syscall per request as uuid4 made, and no policy's random.seed() repeats them.
_REQUEST_IDS = random.Random()


@dataclass
class ServiceConfig:
    token: str | None = None
    max_message_bytes: int = protocol.DEFAULT_MAX_REQUEST_BYTES
    request_timeout_s: float = 30.0


class PolicyService:
    def __init__(self, policy: Policy, batcher_config: BatcherConfig | None = None,
                 config: ServiceConfig | None = None, metrics: Metrics | None = None):
        self.policy = policy
        self.config = config or ServiceConfig()
        if self.config.token is None:
            self.config.token = os.environ.get(protocol.TOKEN_ENV) or None
        self.metrics = metrics or Metrics()
        self.batcher = Batcher(policy, batcher_config, self.metrics)
        info = policy.info()
        self._info = info.replace(
            max_batch_size=self.batcher.config.max_batch_size if info.max_batch_size is None else info.max_batch_size,
            max_message_bytes=self.config.max_message_bytes if info.max_message_bytes is None else info.max_message_bytes,
            ready_path=protocol.READY_PATH if info.ready_path is None else info.ready_path)   # websocket clients probe it
        self.metrics.set_model(self._info.model, self._info.checkpoint)
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()
        # The asyncio transports run a prepare() that takes real time (the engine's image and prompt
        # transforms; the batcher times it at warm-up) on these threads, in parallel with the model.
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="prep")
        self._parse_procs: concurrent.futures.ProcessPoolExecutor | None = None   # started by the first large JSON body
        self._parse_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.batcher.start()

    @property
    def ready(self) -> bool:
        return self.batcher.ready and not self.draining

    def begin_drain(self) -> None:
        self.draining = True
        self.batcher.stop_accepting()

    def info(self) -> ServerInfo:
        return self._info

    def close(self) -> None:
        """After the batcher stopped: release the prep threads and the policy."""
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
        if self._parse_procs is not None:
            self._parse_procs.shutdown(wait=False, cancel_futures=True)
        self.policy.close()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every accepted request has its reply built (the drain's last step)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _enter(self) -> None:
        with self._idle:
            self._inflight += 1
        self.metrics.inflight.inc()

    # -- auth ----------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        return bool(self.config.token)

    def check_auth(self, header_value: str | None) -> None:
        """Raise UNAUTHENTICATED unless the Authorization value carries the token (constant time)."""
        if not self.config.token:
            return
        given = protocol.bearer_token(header_value) or ""
        if not hmac.compare_digest(given.encode(), self.config.token.encode()):
            raise PolicyError(ErrorCode.UNAUTHENTICATED,
                              "missing or wrong token: send 'Authorization: Bearer <token>' (or 'Api-Key <token>')")

    # -- decoding ------------------------------------------------------------------
    def too_big(self, size: int | str | None = None) -> RequestTooLarge:
        """RESOURCE_EXHAUSTED for a request over the cap, naming the cap and the flag that raises it."""
        limit = self.config.max_message_bytes
        what = f"request is {size} bytes," if size is not None else "request is"
        return RequestTooLarge(f"{what} over the limit of {limit} bytes "
                               f"(policy_server {LIMIT_FLAG} raises it)")

    def check_size(self, size: int) -> None:
        if size > self.config.max_message_bytes:
            raise self.too_big(size)

    def decode(self, frame: bytes) -> Any:
        self.check_size(len(frame))
        return codec.unpackb(frame, max_bytes=None)

    @staticmethod
    def offloaded(body: Any) -> bool:
        """Whether this body is decoded, validated and prepared off the event loop."""
        return len(body) > OFFLOAD_BYTES

    async def adecode(self, body: bytes, parse: Any) -> Any:
        """`parse(body)` on the event loop for a small body, on a prep thread for a large one."""
        if not self.offloaded(body):
            return parse(body)
        return await asyncio.wrap_future(self._prep_pool.submit(parse, body))

    async def adecode_json(self, body: RequestBody) -> Any:
        """A JSON body as an observation. A large one is parsed in a worker process: json.loads and
        turning nested lists into arrays hold the GIL throughout (seconds for 50 MB), which would
        stall every thread of this process, the event loop included. It reads a body in shared
        memory in place (policy_server/bodies.py); the caller closes the body afterwards."""
        if not self.offloaded(body):
            return schema.parse_json(body.data())
        with self._parse_lock:
            if self._parse_procs is None:
                self._parse_procs = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_parse_process_init)
        if body.shared:
            job = self._parse_procs.submit(read_shared, body.name, len(body), schema.parse_json)
        else:
            job = self._parse_procs.submit(schema.parse_json, body.data())
        return await asyncio.wrap_future(job)

    # -- requests ------------------------------------------------------------------
    @staticmethod
    def new_request_id(given: str | None = None) -> str:
        if given and len(given) <= 128 and given.isprintable():
            return given
        return f"{_REQUEST_IDS.getrandbits(64):016x}"

    def _deadline(self, timeout_s: float | None) -> float:
        limit = self.config.request_timeout_s
        if timeout_s is not None:
            limit = min(limit, max(timeout_s, 0.0))
        return time.monotonic() + limit

    def _prepared(self, obs: Any, request_id: str) -> Any:
        """The policy's prepare() on the calling thread; its error names this request."""
        if self.draining:
            raise PolicyError(ErrorCode.UNAVAILABLE, "server is draining; retry on another replica", request_id)
        try:
            return self.policy.prepare(obs)
        except PolicyError as exc:
            exc.request_id = request_id
            raise

    def _prepare_and_submit(self, obs: Any, request_id: str, deadline: float,
                            inline_ok: bool, client: Any = None, loop: Any = None) -> concurrent.futures.Future:
        """Prepare an announced request and queue it (or, idle and `inline_ok`, run it here).
        `loop`: the asyncio loop that will await the future (the batcher resolves it there)."""
        try:
            sample = self._prepared(obs, request_id)
        except BaseException:
            self.batcher.withdraw()
            raise
        return self.batcher.submit(sample, request_id, deadline, announced=True, inline_ok=inline_ok,
                                   client=client, loop=loop)

    def _reply(self, reply: Reply, request_id: str, started: float) -> dict[str, Any]:
        """The reply dict every transport sends; `server_timing` is measured here, once, for all of them."""
        return {
            "actions": reply.actions,
            "server_timing": {"infer_ms": (time.monotonic() - started) * 1000.0,
                              "queue_ms": reply.queue_s * 1000.0, "batch_size": reply.batch_size},
            "policy_timing": {"infer_ms": reply.compute_s * 1000.0},
            "model_version": self._info.model_version,
            "request_id": request_id,
        }

    def _finish(self, transport: str, code: str, started: float) -> None:
        self.metrics.request_done(transport, code, time.monotonic() - started)
        self.metrics.inflight.dec()
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def _internal(self, request_id: str, transport: str) -> PolicyError:
        log.exception("internal error on %s request %s", transport, request_id)
        return PolicyError(ErrorCode.INTERNAL, "internal server error; the server log has the details under this request id",
                           request_id)

    def record_error(self, transport: str, err: PolicyError) -> None:
        """Count a request refused before it reached `handle` (bad frame, bad token)."""
        self.metrics.request_done(transport, err.code.value)

    @contextlib.contextmanager
    def _accounted(self, transport: str, request_id: str, started: float) -> Iterator[None]:
        """Count one request under its final code; an unexpected exception becomes INTERNAL
        (traceback logged under the request id, never sent)."""
        self._enter()
        code = "OK"
        try:
            yield
        except PolicyError as exc:
            code = exc.code.value
            raise
        except Exception:
            code = ErrorCode.INTERNAL.value
            raise self._internal(request_id, transport) from None
        finally:
            self._finish(transport, code, started)

    def handle(self, obs: Any, transport: str, request_id: str = "", timeout_s: float | None = None,
               started: float | None = None, client: Any = None) -> dict[str, Any]:
        """Blocking path (gRPC worker threads). `client` names the connection (the batcher tells a
        client coming back from a new one by it); None if the transport cannot say."""
        started = started or time.monotonic()
        request_id = self.new_request_id(request_id)
        deadline = self._deadline(timeout_s)
        with self._accounted(transport, request_id, started):
            self.batcher.announce(client, request_id)
            # An idle model runs the request on this thread (no hand-offs).
            future = self._prepare_and_submit(obs, request_id, deadline, True, client)
            try:
                reply = future.result(timeout=max(deadline - time.monotonic(), 0.0) + 0.05)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise PolicyError(ErrorCode.DEADLINE_EXCEEDED, "no result before the request deadline",
                                  request_id) from None
            return self._reply(reply, request_id, started)

    async def ahandle(self, obs: Any, transport: str, request_id: str = "", timeout_s: float | None = None,
                      started: float | None = None, client: Any = None, offload: bool = False) -> dict[str, Any]:
        """asyncio path (HTTP and websocket); same semantics as `handle`. `offload` (a large
        request) runs the policy's prepare (validation, image transforms) on a prep thread."""
        started = started or time.monotonic()
        request_id = self.new_request_id(request_id)
        deadline = self._deadline(timeout_s)
        loop = asyncio.get_running_loop()
        with self._accounted(transport, request_id, started):
            if not self.batcher.announce(client, request_id):
                # One turn of the loop first: requests that arrived together with this one (for example
                # while a batch held the loop) announce themselves, and then this one is not alone.
                # A client the last batch answered alone, nothing else in the server, skips it (one
                # epoll_wait and a pass over the loop per request, which openpi's server does not pay):
                # should another client arrive in this very turn, it waits for one batch of one.
                await asyncio.sleep(0)
            if not offload and self.batcher.runs_at_once(within_s=LONE_LOOP_BUDGET_S):
                # A lone request to a model whose batch of one takes under the budget: prepared and
                # run right here, as openpi's server runs every request (no thread hand-off).
                future = self._prepare_and_submit(obs, request_id, deadline, True, client, loop)
            elif offload or self.batcher.prepare_s > LOOP_BUDGET_S:
                # Heavy per-request preprocessing runs off the event loop, and the prep thread queues
                # the request itself (or, the model idle, runs it): no wait for the loop to come round.
                future = await asyncio.wrap_future(self._prep_pool.submit(self._prepare_and_submit, obs,
                                                                          request_id, deadline, True, client, loop))
            else:
                future = self._prepare_and_submit(obs, request_id, deadline, False, client, loop)
            try:
                reply = future.result() if future.done() else await asyncio.wait_for(
                    _awaitable(future, loop), max(deadline - time.monotonic(), 0.0) + 0.05)
            except asyncio.TimeoutError:
                future.cancel()
                raise PolicyError(ErrorCode.DEADLINE_EXCEEDED, "no result before the request deadline", request_id)
            return self._reply(reply, request_id, started)


def _awaitable(future: concurrent.futures.Future, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    """An asyncio future for the batcher's `future`. The batcher resolves the futures of requests
    submitted with `loop` on that loop's thread (one call per batch), and then this one is set
    there and then; `asyncio.wrap_future` would schedule it once more, with a socket write to wake
    the loop (which gives up the GIL) for every request of the batch."""
    waiter = loop.create_future()

    def copy(done: concurrent.futures.Future) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
        elif done.exception() is not None:
            waiter.set_exception(done.exception())
        else:
            waiter.set_result(done.result())

    def on_done(done: concurrent.futures.Future) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            copy(done)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(on_done)
    return waiter
