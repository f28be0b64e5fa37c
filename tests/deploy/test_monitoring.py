"""Prometheus scrape configs, alert rules (checked and unit-tested by promtool) and the Grafana
dashboard, whose every PromQL expression promtool parses as well."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy import grafana_exprs
from tests.deploy.conftest import DASHBOARDS, DEPLOY, run

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
# The metric names of docs/ARCHITECTURE.md (histograms expose _bucket/_sum/_count) plus Prometheus' own `up`.
_HISTOGRAMS = ["policy_request_duration_seconds", "policy_queue_duration_seconds",
               "policy_compute_duration_seconds", "policy_batch_size"]
KNOWN_METRICS = ({"policy_requests_total", "policy_inflight_requests", "policy_model_info", "up"}
                 | {h + s for h in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")})


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_promtool_check_config(promtool, config):
    out = run([promtool, "check", "config", str(PROM / config)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and f"{len(RULE_FILES)} rule files found" in out.stdout


def test_promtool_check_rules(promtool):
    assert RULE_FILES
    out = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_fire_as_unit_tested(promtool):
    assert RULE_TESTS
    out = run([promtool, "test", "rules", *map(str, RULE_TESTS)], cwd=PROM / "tests")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_issue_alerts_are_all_there():
    alerts = {r["alert"]: r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    # p99 latency, error ratio, queue saturation, server down, no requests while an eval runs
    assert {"PolicyLatencyP99High", "PolicyErrorRatioHigh", "PolicyQueueSaturated", "PolicyServerDown",
            "PolicyNoRequestsDuringEval"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        tested = any(f"alertname: {name}\n" in t.read_text() for t in RULE_TESTS)
        assert tested, f"alert {name} has no promtool unit test"


def test_promtool_rejects_bad_promql(promtool, tmp_path):
    # Control for the dashboard check below: promtool must fail on a broken expression.
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x", "expr": "histogram_quantile(0.99, sum by (le) (rate(policy_batch_size_bucket[5m]))"}]}]}))
    assert run([promtool, "check", "rules", str(bad)]).returncode != 0


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_expression_passes_promtool(promtool, dashboard, tmp_path):
    data = grafana_exprs.load(dashboard)
    exprs = grafana_exprs.panel_exprs(data) + grafana_exprs.variable_selectors(data)
    assert len(exprs) >= 10
    rules = [{"record": f"grafana:check_{i}", "expr": expr, "labels": {"panel": title}}
             for i, (title, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": dashboard.stem, "rules": rules}]}))
    out = run([promtool, "check", "rules", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_only_the_design_metrics(dashboard):
    # promtool accepts any metric name; a typo would show as an empty panel. Names are checked here.
    data = grafana_exprs.load(dashboard)
    for title, expr in grafana_exprs.panel_exprs(data) + grafana_exprs.variable_selectors(data):
        names = grafana_exprs.metric_names(expr)
        assert names and names <= KNOWN_METRICS, f"{title}: unknown metric in {expr!r}"


def test_dashboard_covers_the_issue_panels_and_is_well_formed():
    data = grafana_exprs.load(DEPLOY / "grafana/dashboards/policy_server.json")
    panels = data["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    text = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}

    def panel(words):
        return next(t for t in text if all(w in t.lower() for w in words))

    assert "by (transport, code)" in text[panel(["rate", "transport", "code"])]
    latency = text[panel(["latency", "p50"])]
    assert all(f"histogram_quantile({q}," in latency for q in ("0.5", "0.9", "0.99"))
    queue = text[panel(["queue", "compute"])]
    assert "policy_queue_duration_seconds_bucket" in queue and "policy_compute_duration_seconds_bucket" in queue
    assert "policy_batch_size_bucket" in text[panel(["batch size distribution"])]
    assert "policy_inflight_requests" in text[panel(["in-flight"])]
    assert "policy_model_info" in text[panel(["model info"])]
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    ds_var = next(v for v in data["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["current"]["value"] == provisioned["datasources"][0]["uid"]


def test_rules_use_only_the_design_metrics_and_defined_recordings():
    recorded, defined = set(), set()
    for f in RULE_FILES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                names = grafana_exprs.metric_names(rule["expr"]) - {"up"}
                assert names <= KNOWN_METRICS, f"{rule}: unknown metric {names - KNOWN_METRICS}"
                recorded |= set(re.findall(r"[\w]*:[\w:]+", rule["expr"]))
                if "record" in rule:
                    defined.add(rule["record"])
    assert recorded <= defined, f"alerts read recorded series no rule defines: {recorded - defined}"
