"""`policy_server`: serve a trained work dir, or a scripted policy, over gRPC + HTTP + websocket.

    policy_server --work-dir work_dirs/demo [--checkpoint checkpoint_epoch_2.pt]
    policy_server --scripted noop --grpc-port 50051 --http-port 8000
    policy_server --scripted replay --replay-file actions.json

SIGTERM/SIGINT drain: readiness off, in-flight requests answered, new ones UNAVAILABLE,
exit within --drain-timeout-s.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from policy_server.batcher import BatcherConfig
from policy_server.malloc import KEEP_FREED_MB, keep_freed_memory, limit_malloc_arenas
from policy_server.service import ServiceConfig
from vla.wire import protocol

log = logging.getLogger("policy_server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="policy_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--work-dir", help="trained work dir (config.json, dataset_statistics.json, checkpoints)")
    src.add_argument("--scripted", choices=["noop", "replay", "fault"], help="serve a scripted policy (no model)")
    p.add_argument("--checkpoint", help="checkpoint file in the work dir (default: the one `latest` names)")
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda or cuda:1 (default: cpu)")
    p.add_argument("--tokenizer", help="tokenizer directory, if the one the config names is elsewhere here")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the server's noise generator (requests that send no seed of their own)")
    p.add_argument("--noise", choices=["fresh", "fixed", "zero"],
                   help="fresh: new noise per request, from the request's seed when it sends one; "
                        "fixed: the same seeded noise for every request; zero: every sample starts at the "
                        "noise mean (deterministic). Default: the config's eval.noise, else fresh")
    p.add_argument("--replay-file", help="replay: JSON {prompt: [[7 floats], ...]} or .npy [T, 7]")
    p.add_argument("--chunk-length", type=int, default=10, help="scripted: actions per reply")
    p.add_argument("--compute-ms", type=float, default=0.0, help="scripted: simulated model time per batch")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--grpc-port", type=int, default=protocol.GRPC_PORT, help="gRPC port; -1 disables")
    p.add_argument("--http-port", type=int, default=protocol.HTTP_PORT, help="HTTP + websocket port; -1 disables")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-ms", type=float, default=10.0,
                   help="longest a batch waits for requests known to be on their way (a lone request never waits)")
    p.add_argument("--max-queue-size", type=int, default=256)
    p.add_argument("--max-message-bytes", type=int, default=protocol.DEFAULT_MAX_REQUEST_BYTES,
                   help="largest request body / websocket frame / gRPC message accepted, in bytes (default 8 MiB; "
                        "a LIBERO request is ~0.4 MB as msgpack, ~1.5 MB as JSON); larger ones get RESOURCE_EXHAUSTED")
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--drain-timeout-s", type=float, default=30.0)
    p.add_argument("--grpc-workers", type=int, default=32)
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--gil-switch-ms", type=float, default=0.0,
                   help="Python's thread switch interval: shorter lets transport threads answer while the "
                        "model thread runs Python code (0 keeps Python's 5 ms)")
    p.add_argument("--malloc-arenas", type=int, default=2,
                   help="glibc malloc arenas (M_ARENA_MAX) for the server's threads; each thread's own arena "
                        "otherwise keeps freed request buffers and RSS creeps up under load (0 keeps glibc's "
                        "default of 8 per core; MALLOC_ARENA_MAX in the environment wins)")
    p.add_argument("--malloc-keep-mb", type=int, default=KEEP_FREED_MB,
                   help="freed heap memory glibc keeps for reuse instead of returning it to the OS "
                        "(M_TRIM_THRESHOLD; allocations up to this size, at most 32, come from the heap: "
                        "M_MMAP_THRESHOLD). glibc's defaults gave every request's buffers back and "
                        "page-faulted them in again, ~110 faults per LIBERO request (0 keeps glibc's "
                        "defaults; MALLOC_TRIM_THRESHOLD_ or MALLOC_MMAP_THRESHOLD_ in the environment win)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch's intra-op threads for the model (0: torch's default, one per core). Default: 1, "
                        "or what OMP_NUM_THREADS says when it is set. One leaves the other cores to the transports, "
                        "the clients and sim workers: on a 2-core machine torch's default of 2 made the tiny "
                        "pi0's batch of one 3.0 -> 8.7 ms and a lone client's round trip 4.4 -> 11.5 ms, and 8 "
                        "clients got 340 req/s instead of 532 (benchmarks/serve_batching.py "
                        "--also='--torch-threads 0')")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def torch_threads(args: argparse.Namespace) -> int | None:
    """The intra-op thread count to set for the model, or None to leave torch as it is."""
    if args.torch_threads is not None:
        return args.torch_threads or None
    return None if "OMP_NUM_THREADS" in os.environ else 1


def make_policy(args: argparse.Namespace):
    if args.scripted:
        from policy_server.scripted import make_scripted

        return make_scripted(args.scripted, chunk_length=args.chunk_length, compute_ms=args.compute_ms,
                             replay_file=args.replay_file)
    threads = torch_threads(args)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from policy_server.engine import load_engine

    return load_engine(args.work_dir, checkpoint=args.checkpoint, device=args.device,
                       tokenizer_path=args.tokenizer, seed=args.seed, noise=args.noise)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gil_switch_ms > 0:
        sys.setswitchinterval(args.gil_switch_ms / 1000.0)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.malloc_arenas < 0:
        print(f"policy_server: --malloc-arenas must be >= 0, got {args.malloc_arenas}", file=sys.stderr)
        return 2
    if args.malloc_arenas and "MALLOC_ARENA_MAX" not in os.environ and not limit_malloc_arenas(args.malloc_arenas):
        log.warning("--malloc-arenas %d: not glibc (no mallopt), left as the C library sets it", args.malloc_arenas)
    if args.torch_threads is not None and args.torch_threads < 0:
        print(f"policy_server: --torch-threads must be >= 0, got {args.torch_threads}", file=sys.stderr)
        return 2
    if args.malloc_keep_mb < 0:
        print(f"policy_server: --malloc-keep-mb must be >= 0, got {args.malloc_keep_mb}", file=sys.stderr)
        return 2
    if (args.malloc_keep_mb and not {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"} & set(os.environ)
            and not keep_freed_memory(args.malloc_keep_mb)):
        log.warning("--malloc-keep-mb %d: not glibc (no mallopt), left as the C library sets it", args.malloc_keep_mb)
    from vla.errors import EXPECTED_ERRORS, cli_error

    try:
        policy = make_policy(args)
    except EXPECTED_ERRORS as exc:   # a bad work dir, file or flag: say which; anything else is a bug (traceback)
        print(cli_error("policy_server", exc, debug=args.log_level.upper() == "DEBUG"), file=sys.stderr)
        return 2
    from policy_server.server import PolicyServer

    server = PolicyServer(
        policy, host=args.host,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        http_port=None if args.http_port < 0 else args.http_port,
        batcher=BatcherConfig(args.max_batch_size, args.max_queue_delay_ms, args.max_queue_size,
                              warmup=not args.no_warmup),
        service=ServiceConfig(max_message_bytes=args.max_message_bytes, request_timeout_s=args.request_timeout_s),
        grpc_workers=args.grpc_workers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        server.start()
    except OSError as exc:
        print(f"policy_server: {exc}", file=sys.stderr)
        server.stop()
        return 2
    log.info("listening: grpc=%s http=%s (warming up)", server.grpc_port, server.http_port)
    batcher = server.service.batcher
    while not stop.wait(0.2):
        if batcher.failure is not None:   # ready would be a lie: every request would fail
            print(f"policy_server: {args.work_dir or 'the policy'} cannot answer requests, so the server will "
                  f"not report ready: {batcher.failure} (the server's own files do not fit each other; "
                  "no client is at fault)", file=sys.stderr)
            server.stop()
            return 2
        if batcher.ready:
            # Warmed up: only the signal is left to wait for, without waking this thread five times a
            # second (each wake-up takes the GIL from the threads answering requests).
            stop.wait()
    clean = server.drain(args.drain_timeout_s)
    log.info("stopped (%s)", "drained" if clean else "drain deadline passed")
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
