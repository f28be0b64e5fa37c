"""Probe a policy server running in a container from the host (`make images-test`): /readyz, one
inference each over gRPC and HTTP, and a real Prometheus (Debian's build) scraping its published
/metrics with the shipped config and rules. Prints one JSON line; exit 0 only if every check passed.

    python -m tests.deploy.stack_probe --grpc-port 50051 --http-port 8000 [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.conftest import free_port, stop_process
from tests.deploy.live_prometheus import Prom, get, start_prometheus, wait_for
from vla.wire import protocol
from vla.wire.client import connect


def _request_count(http_port: int) -> float:
    text = get(f"http://127.0.0.1:{http_port}/metrics").decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("policy_request_duration_seconds_count"))


def probe(grpc_port: int, http_port: int, workdir: Path) -> dict:
    from policy_server.schema import example_observation

    report: dict = {"readyz": json.loads(get(f"http://127.0.0.1:{http_port}{protocol.READY_PATH}"))}
    obs = example_observation()
    for scheme, port in (("grpc", grpc_port), ("http", http_port)):
        with connect(f"{scheme}://127.0.0.1:{port}", retries=0) as client:
            reply = client.infer(obs)
            actions = np.asarray(reply["actions"])
            assert actions.ndim == 2 and actions.shape[1] == 7 and np.isfinite(actions).all(), actions.shape
            report[scheme] = {"actions": list(actions.shape), "model_version": reply.get("model_version"),
                              "infer_ms": reply.get("policy_timing", {}).get("infer_ms")}
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not (promtool and prometheus):
        raise SystemExit("stack_probe: Debian's prometheus package (prometheus, promtool) is not installed")
    prom_port = free_port()
    proc = start_prometheus(prometheus, promtool, workdir, f"127.0.0.1:{http_port}", prom_port)
    try:
        prom = Prom(prom_port)
        served = _request_count(http_port)
        wait_for("Prometheus to scrape the server (up == 1)", lambda: prom.scalar('up{job="policy-server"}') == 1.0)
        wait_for(f"Prometheus to see the server's {served:.0f} requests", lambda: prom.scalar(
            'sum(policy_request_duration_seconds_count{job="policy-server"})') == served)
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        wait_for("every rule evaluated", lambda: all(r["health"] == "ok" for r in
                                                     (r for g in prom.api("rules")["groups"] for r in g["rules"])))
        report["prometheus"] = {"up": 1, "requests_scraped": served, "rules_ok": len(rules),
                                "version": prom.api("status/buildinfo")["version"]}
    finally:
        stop_process(proc)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stack_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--workdir", type=Path, help="Prometheus config and TSDB (default: a temporary directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stack_probe.") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(probe(args.grpc_port, args.http_port, workdir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
