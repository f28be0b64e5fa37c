"""The PromQL in a Grafana dashboard, with Grafana's variables replaced by values Prometheus accepts."""
from __future__ import annotations

import json
import re
from pathlib import Path

# Grafana's built-in interval variables and this dashboard's template variables.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$job": "policy-server",
    "$instance": ".*",
}


def substitute(expr: str) -> str:
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    leftover = re.findall(r"\$\{?\w+", expr)
    if leftover:
        raise ValueError(f"unknown Grafana variables {leftover} in {expr!r}")
    return expr


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target, rows' nested panels included."""
    out = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack += panel.get("panels", [])
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((panel["title"], substitute(target["expr"])))
    return out


def variable_selectors(dashboard: dict) -> list[tuple[str, str]]:
    """label_values(SELECTOR, label) variables: the SELECTOR part is PromQL too."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query or "")
        if var.get("type") == "query" and m:
            out.append((var["name"], substitute(m.group(1))))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (label matchers, strings, ranges, grouping and recorded
    `level:metric:op` names removed), so they can be checked against the exported ones."""
    stripped = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|\b(?:by|without|on|ignoring) \([^)]*\)|[\w]*:[\w:]+', " ", expr)
    return set(re.findall(r"\b(policy_\w+|up)\b", stripped))


def load(path: Path) -> dict:
    return json.loads(path.read_text())
