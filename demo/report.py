"""What `make demo` prints at the end: the success table, the server's latency, where things are.

The server's latency comes from its own Prometheus histogram `policy_request_duration_seconds`
(saved by scripts/eval.sh as `server_metrics.prom` before it stops the server); quantiles are
interpolated inside buckets the way Prometheus' `histogram_quantile` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vla import io

REQUEST_HISTOGRAM = "policy_request_duration_seconds"


def histogram_buckets(text: str, name: str = REQUEST_HISTOGRAM) -> tuple[dict[str, list[tuple[float, float]]], dict]:
    """Cumulative buckets per transport [(le, count), ...] and request counts per (transport, code)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, dict[float, float]] = {}
    requests: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                le = float(s.labels["le"])
                per = buckets.setdefault(s.labels.get("transport", ""), {})
                per[le] = per.get(le, 0.0) + s.value
            elif s.name == "policy_requests_total":
                requests[(s.labels.get("transport", ""), s.labels.get("code", ""))] = s.value
    return {t: sorted(b.items()) for t, b in buckets.items()}, requests


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: linear inside the bucket holding rank q*N (lower edge 0 for the first)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le  # beyond the largest finite bucket: its upper edge is all one can say
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width > 0 else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def server_latency(metrics_file: str | Path) -> dict[str, Any] | None:
    """p50/p99 (ms) over every transport and the request counts, or None if the file is missing."""
    path = Path(metrics_file)
    if not path.is_file():
        return None
    per_transport, requests = histogram_buckets(path.read_text())
    merged: dict[float, float] = {}
    for b in per_transport.values():
        for le, count in b:
            merged[le] = merged.get(le, 0.0) + count
    buckets = sorted(merged.items())
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    return {"requests": int(buckets[-1][1]) if buckets else 0,
            "p50_ms": None if p50 is None else 1000 * p50, "p99_ms": None if p99 is None else 1000 * p99,
            "by_code": {f"{t}/{c}": int(v) for (t, c), v in sorted(requests.items())}}


def final_report(work_dir: Path, eval_dir: Path, data_root: Path, timings: dict[str, float | None]) -> str:
    from sim_client.report import format_table, summarize
    from sim_client.results import read_results

    lines = read_results(eval_dir / "results.jsonl")
    summary = summarize(lines)
    o = summary["overall"]
    n = o["successes"] + o["failures"]
    rate = f"{100 * o['rate']:.1f}% ({o['successes']}/{n})" if o["rate"] is not None else "-"
    lat = server_latency(eval_dir / "server_metrics.prom")
    if lat and lat["requests"]:
        latency = (f"server latency (its /metrics, {lat['requests']} requests): p50 {lat['p50_ms']:.1f} ms, "
                   f"p99 {lat['p99_ms']:.1f} ms")
    else:
        latency = f"server latency: not recorded ({eval_dir / 'server_metrics.prom'} missing or empty)"
    client = o.get("mean_latency_ms")
    videos = sorted((eval_dir / "videos").glob("*.mp4")) if (eval_dir / "videos").is_dir() else []
    out = [
        "",
        format_table(summary),
        "",
        f"overall success rate: {rate}, {o['errors']} infrastructure errors",
        latency + (f"; client round trip mean {client:.1f} ms" if client else ""),
        "",
        *what_was_measured(work_dir, data_root, summary),
        "",
        f"dataset        {data_root}",
        f"work dir       {work_dir}  (checkpoints, config.json, dataset_statistics.json, metrics.jsonl)",
        f"loss plot      {work_dir / 'loss.png'}",
        f"results        {eval_dir / 'results.jsonl'}  (summary.json, server.log beside it)",
        f"success plot   {eval_dir / 'success_by_task.png'}",
        f"videos         {eval_dir / 'videos'}  ({len(videos)} files)",
        f"server metrics {eval_dir / 'server_metrics.prom'}",
    ]
    if timings:
        out.append("")
        out.append("step times: " + ", ".join(f"{k} {'skipped' if v is None else f'{v:.0f}s'}"
                                              for k, v in timings.items()))
    return "\n".join(out)


def what_was_measured(work_dir: Path, data_root: Path, summary: dict[str, Any]) -> list[str]:
    """Two sentences from the files themselves: what was trained on what, and how it was scored."""
    import textwrap

    cfg = io.read_json(work_dir / "config.json")
    info = io.read_json(data_root / "meta" / "info.json")
    latest = (work_dir / "latest").read_text().strip() if (work_dir / "latest").is_file() else "?"
    steps = (cfg.get("runner") or {}).get("max_steps")
    pretrained = (cfg.get("model") or {}).get("pretrained_name_or_path")
    tasks = summary["tasks"]
    per_task = sorted({t["episodes"] for t in tasks})
    scored = ", ".join(f"{t['suite']} task {t['task_id']}" for t in tasks) or "no task"
    o = summary["overall"]
    n = o["successes"] + o["failures"]
    text = (f"Measured: {(cfg.get('model') or {}).get('type', 'the model')} trained here "
            f"{'from scratch' if not pretrained else 'from ' + str(pretrained)} for {steps} steps ({latest}) on "
            f"{info.get('total_episodes')} recorded demonstrations ({info.get('total_frames')} frames, "
            f"{info.get('total_tasks')} task(s)), then served by policy_server and run closed loop by sim_client "
            f"on {scored}, {'/'.join(map(str, per_task))} standard initial state(s) each: "
            f"{o['successes']}/{n} succeeded ({o['errors']} infrastructure errors).")
    return textwrap.wrap(text, width=100)


def write_json(path: Path, data: dict[str, Any]) -> None:
    io.write_json(path, data, sort_keys=True)
