"""A real Prometheus (Debian's build) on loopback, configured from deploy/prometheus/prometheus.yml
and its rules, scrapes a running `policy_server --scripted noop`. Requests go through vla.wire;
the latency histogram is read back through Prometheus' HTTP API and compared with the server's
own /metrics, and every Grafana dashboard query is evaluated against the scraped data."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port, stop_process
from tests.deploy import grafana_exprs
from tests.deploy.conftest import DASHBOARDS
from tests.deploy.live_prometheus import Prom, get, start_prometheus, wait_for
from vla.wire.client import connect
from vla.wire.errors import ErrorCode, PolicyError

COMPUTE_MS = 20          # scripted model time per batch: every request takes at least this long


def _server_histogram(http_port: int) -> dict[str, float]:
    """Cumulative policy_request_duration_seconds buckets summed over transports, from /metrics."""
    text = get(f"http://127.0.0.1:{http_port}/metrics").decode()
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "policy_request_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    buckets[s.labels["le"]] = buckets.get(s.labels["le"], 0.0) + s.value
    return buckets


@pytest.fixture
def stack(tmp_path, promtool, prometheus_bin):
    grpc_port, http_port, prom_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "policy_server.cli", "--scripted", "noop", "--host", "127.0.0.1",
         "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--chunk-length", "4",
         "--compute-ms", str(COMPUTE_MS), "--log-level", "WARNING"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    prom = None
    try:
        prom = start_prometheus(prometheus_bin, promtool, tmp_path, f"127.0.0.1:{http_port}", prom_port)
        client = connect(f"grpc://127.0.0.1:{grpc_port}", token="", retries=0)
        client.wait_ready(timeout_s=60, poll_s=0.2)
        yield dict(grpc=client, http=connect(f"http://127.0.0.1:{http_port}", token="", retries=0),
                   http_port=http_port, prom=Prom(prom_port), server=server, prom_proc=prom)
        client.close()
    finally:
        stop_process(server)
        if prom is not None:
            stop_process(prom)


def _send(stack, n_grpc: int, n_http: int, n_bad: int) -> None:
    from policy_server.schema import example_observation

    obs = example_observation(16, 16)
    for i in range(max(n_grpc, n_http)):
        if i < n_grpc:
            assert stack["grpc"].infer(obs)["actions"].shape == (4, 7)
        if i < n_http:
            assert stack["http"].infer(obs)["actions"].shape == (4, 7)
    for _ in range(n_bad):
        bad = dict(obs, agentview_image=np.zeros((2, 2), np.float32))
        with pytest.raises(PolicyError) as err:
            stack["grpc"].infer(bad)
        assert err.value.code == ErrorCode.INVALID_ARGUMENT


def _scraped_count(prom: Prom) -> float:
    return prom.scalar('sum(policy_request_duration_seconds_count{job="policy-server"})') or 0.0


def test_prometheus_scrapes_the_server_and_serves_its_latency_histogram(stack):
    prom, http_port = stack["prom"], stack["http_port"]
    # Two waves, each waited for in Prometheus, so rate() windows see the counters move.
    sent = 0
    waves = ((12, 6, 1), (12, 6, 1))
    for n_grpc, n_http, n_bad in waves:
        _send(stack, n_grpc, n_http, n_bad)
        server_count = _server_histogram(http_port)["+Inf"]
        assert server_count >= sent + n_grpc + n_http
        sent = server_count
        wait_for(f"Prometheus to scrape {server_count} requests", lambda: _scraped_count(prom) == server_count)

    # The histogram as Prometheus stores it equals the server's own, bucket by bucket.
    result = prom.query('sum by (le) (policy_request_duration_seconds_bucket{job="policy-server"})')
    scraped = {r["metric"]["le"]: float(r["value"][1]) for r in result}
    server = _server_histogram(http_port)
    assert {float(k) for k in scraped} == {float(k) for k in server}
    assert {float(k): v for k, v in scraped.items()} == {float(k): v for k, v in server.items()}
    ordered = [v for _, v in sorted(scraped.items(), key=lambda kv: float(kv[0]))]
    assert ordered == sorted(ordered) and ordered[-1] == sent
    # No request can be faster than the scripted compute time: the quantiles say so.
    p50 = prom.scalar('histogram_quantile(0.5, sum by (le) (rate(policy_request_duration_seconds_bucket'
                      '{job="policy-server"}[1m])))')
    p99 = prom.scalar('histogram_quantile(0.99, sum by (le) (rate(policy_request_duration_seconds_bucket'
                      '{job="policy-server"}[1m])))')
    assert p50 is not None and COMPUTE_MS / 1000 <= p50 <= p99 < 5.0, (p50, p99)
    by_transport = prom.query('sum by (transport) (policy_request_duration_seconds_count{job="policy-server"})')
    assert {r["metric"]["transport"] for r in by_transport} >= {"grpc", "http"}
    codes = {r["metric"]["code"]: float(r["value"][1]) for r in
             prom.query('sum by (code) (policy_requests_total{job="policy-server"})')}
    assert codes == {"OK": sum(g + h for g, h, _ in waves), "INVALID_ARGUMENT": sum(b for *_, b in waves)}, codes

    # The shipped rules loaded and evaluate cleanly against real series.
    wait_for("a p99 recording", lambda: prom.scalar('job:policy_request_duration_seconds:p99_5m'
                                                      '{job="policy-server"}'))
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 12 and all(r["health"] == "ok" for r in rules), \
        [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    firing = [a["labels"]["alertname"] for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []

    # Every dashboard query returns data for this server (an empty panel would mean a broken query).
    for dashboard in DASHBOARDS:
        data = grafana_exprs.load(dashboard)
        for title, expr in grafana_exprs.panel_exprs(data) + grafana_exprs.variable_selectors(data):
            result = prom.query(expr)
            assert result, f"dashboard panel {title!r}: no data for {expr!r}"
            values = [float(r["value"][1]) for r in result]
            assert not all(math.isnan(v) for v in values), f"dashboard panel {title!r}: only NaN for {expr!r}"

    # The server goes away: Prometheus sees the target down and PolicyServerDown becomes pending.
    stop_process(stack["server"])
    wait_for("up == 0", lambda: prom.scalar('up{job="policy-server"}') == 0.0)
    wait_for("PolicyServerDown pending", lambda: any(
        a["labels"]["alertname"] == "PolicyServerDown" and a["state"] in ("pending", "firing")
        for a in prom.api("alerts")["alerts"]))
