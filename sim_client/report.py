"""Success table (95% Wilson interval, errors apart), summary.json and success_by_task.png."""
from __future__ import annotations

import math
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable

from vla.io import atomic_write, write_json

Z95 = 1.959963984540054
MAX_TABLE_TASKS = 100   # more tasks than this: the table and the plot show suites (and dimensions)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per task and overall: episodes, successes, failures, errors, rate and interval.

    Errors (infrastructure) are counted apart: they are neither successes nor failures and do
    not enter the rate's denominator. Failures caused by a reply that broke the action contract
    (`failure` set, sim_client.contract) are failures like any other, counted in `reply_failures`
    too; `failure_reasons` and `error_reasons` count each kind (the text before the first ':').
    """
    rows: "OrderedDict[tuple[str, int], dict[str, Any]]" = OrderedDict()
    reasons: Counter = Counter()
    errors: Counter = Counter()
    for line in sorted(lines, key=lambda r: (r["suite"], r["task_id"], r["trial"])):
        row = rows.setdefault((line["suite"], line["task_id"]), {
            "suite": line["suite"], "task_id": line["task_id"], "task": line.get("task", ""),
            "episodes": 0, "successes": 0, "failures": 0, "errors": 0, "reply_failures": 0, "steps": 0,
            "latency_ms": []})
        row["episodes"] += 1
        if line.get("error"):
            row["errors"] += 1
            errors[_kind(line["error"])] += 1
        elif line.get("success"):
            row["successes"] += 1
        else:
            row["failures"] += 1
            if line.get("failure"):
                row["reply_failures"] += 1
                reasons[_kind(line["failure"])] += 1
        row["steps"] += int(line.get("steps") or 0)
        if line.get("latency_ms"):
            row["latency_ms"].append(float(line["latency_ms"]))
        if line.get("dimension"):
            row.update(dimension=line["dimension"], level=line.get("level"))
    tasks = []
    for row in rows.values():
        tasks.append(_finish(row))
    out = {"tasks": tasks, "overall": _finish(_pool(rows.values())), "failure_reasons": dict(reasons.most_common()),
           "error_reasons": dict(errors.most_common())}
    suites = OrderedDict()
    for row in rows.values():
        suites.setdefault(row["suite"], []).append(row)
    out["by_suite"] = [dict(_finish(_pool(group)), suite=name) for name, group in suites.items()]
    if any(row.get("dimension") for row in rows.values()):
        # Robustness suites: success by perturbation dimension, and by level where the suite has levels.
        dims, levels = OrderedDict(), OrderedDict()
        for row in sorted(rows.values(), key=lambda r: (r.get("dimension") or "", r.get("level") or "")):
            dims.setdefault(row.get("dimension"), []).append(row)
            if row.get("level"):
                levels.setdefault((row["dimension"], row["level"]), []).append(row)
        out["by_dimension"] = [dict(_finish(_pool(g)), dimension=d) for d, g in dims.items()]
        out["by_level"] = [dict(_finish(_pool(g)), dimension=d, level=lv) for (d, lv), g in levels.items()]
    return out


def _pool(rows) -> dict[str, Any]:
    rows = list(rows)
    total = {k: sum(r[k] for r in rows) for k in ("episodes", "successes", "failures", "errors", "reply_failures",
                                                 "steps")}
    total["latency_ms"] = [x for r in rows for x in r["latency_ms"]]
    return total


def _kind(text: str) -> str:
    """`actions_nonfinite: 3 NaN ...` → `actions_nonfinite`; `server: UNAVAILABLE: ...` → `server`."""
    return str(text).split(":", 1)[0].strip()[:60]


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    n = row["successes"] + row["failures"]
    lo, hi = wilson(row["successes"], n)
    lat = row.pop("latency_ms")
    row.update(rate=row["successes"] / n if n else None, ci95=[lo, hi],
               mean_latency_ms=sum(lat) / len(lat) if lat else None)
    return row


def format_table(summary: dict[str, Any]) -> str:
    w = max([15] + [len(t["suite"]) + 1 for t in summary["tasks"]])   # LIBERO-PRO's names are longer
    head = f"{'suite':<{w}}{'task':>5}  {'success':>9}  {'rate':>6}  {'95% CI':>15}  {'errors':>6}  instruction"
    out = [head, "-" * len(head)]

    def fmt(row: dict[str, Any], label_suite: str, label_task: str, text: str) -> str:
        n = row["successes"] + row["failures"]
        rate = f"{100 * row['rate']:5.1f}%" if row["rate"] is not None else "    - "
        ci = f"[{100 * row['ci95'][0]:5.1f},{100 * row['ci95'][1]:5.1f}]%"
        return (f"{label_suite:<{w}}{label_task:>5}  {row['successes']:>4}/{n:<4}  {rate:>6}  {ci:>15}  "
                f"{row['errors']:>6}  {text}")

    if len(summary["tasks"]) <= MAX_TABLE_TASKS:
        for row in summary["tasks"]:
            out.append(fmt(row, row["suite"], str(row["task_id"]), row["task"][:60]))
    else:   # 10,030 LIBERO-plus instances: one row per suite here, every task in summary.json
        for row in summary.get("by_suite", []):
            out.append(fmt(row, row["suite"], "all", f"{len([t for t in summary['tasks'] if t['suite'] == row['suite']])}"
                                                     " tasks (per task: summary.json)"))
    out.append("-" * len(head))
    out.append(fmt(summary["overall"], "overall", "", ""))
    if summary.get("by_dimension"):
        out.append("-" * len(head))
        out.append("by perturbation dimension (and level):")
        for row in summary["by_dimension"]:
            out.append(fmt(row, "", "", row["dimension"] or "-"))
        for row in summary.get("by_level", []):
            out.append(fmt(row, "", "", f"{row['dimension']}: {row['level']}"))
    out.extend(_footer(summary))
    return "\n".join(out)


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items())


def _footer(summary: dict[str, Any]) -> list[str]:
    """Why episodes failed early or errored, and which replanning chunk ran (when recorded)."""
    lines = []
    o = summary["overall"]
    if o.get("reply_failures"):
        lines.append(f"policy failures from invalid replies, counted in the rate ({o['reply_failures']}): "
                     f"{_counts(summary.get('failure_reasons', {}))}")
    if o.get("errors"):
        lines.append(f"infrastructure errors, retried and not counted ({o['errors']}): "
                     f"{_counts(summary.get('error_reasons', {}))}")
    if summary.get("replan"):
        r = summary["replan"]
        lines.append(f"replanning: {r['steps']} actions executed per query ({r['convention']})")
    return lines


def write_report(out_dir: str | Path, lines: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict:
    """summary.json + success_by_task.png beside results.jsonl; returns the summary."""
    out_dir = Path(out_dir)
    summary = summarize(lines)
    summary.update(extra or {})
    write_json(out_dir / "summary.json", summary)
    plot_success(summary, out_dir / "success_by_task.png")
    return summary


def plot_success(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if summary.get("by_dimension"):   # robustness suites: success by perturbation dimension (and level)
        tasks = summary["by_dimension"] + summary.get("by_level", [])
        labels = [t["dimension"] + (f": {t['level']}" if t.get("level") else "") for t in tasks]
    elif len(summary["tasks"]) > MAX_TABLE_TASKS:
        tasks = summary["by_suite"]
        labels = [t["suite"] for t in tasks]
    else:
        tasks = summary["tasks"]
        labels = [f"{t['suite'].replace('libero_', '')}/{t['task_id']}" for t in tasks]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(tasks) + 2), 3.5))
    xs = range(len(tasks))
    rates = [100 * (t["rate"] or 0.0) for t in tasks]
    # Clamped: rounding can put an interval end a hair inside the rate (matplotlib rejects < 0).
    err_lo = [max(0.0, r - 100 * t["ci95"][0]) for r, t in zip(rates, tasks)]
    err_hi = [max(0.0, 100 * t["ci95"][1] - r) for r, t in zip(rates, tasks)]
    ax.bar(xs, rates, yerr=[err_lo, err_hi], capsize=3, color="#4c72b0")
    ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("success % (95% Wilson CI)")
    o = summary["overall"]
    overall = f"{100 * o['rate']:.1f}%" if o["rate"] is not None else "-"
    ax.set_title(f"overall {overall} of {o['successes'] + o['failures']} episodes, {o['errors']} errors",
                 fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
