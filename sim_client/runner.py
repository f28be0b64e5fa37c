"""An evaluation run: which episodes, resume, workers, progress bar, results and report."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sim_client import suites
from sim_client.errors import SimClientError
from sim_client.report import format_table, write_report
from sim_client.results import ResultsFile, select_shard
from vla.wire.server_info import ServerInfo

_logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """The `eval` section of FluxVLA's configs (its LiberoEvalRunner) plus the client's own knobs."""
    task_suite_name: str = "libero_10"
    num_trials_per_task: int = 50
    seed: int = 7
    eval_chunk_size: int = 10
    num_steps_wait: int = 10
    resize_size: int = 224
    max_steps: int | None = None          # None: openpi's budget for the suite
    tasks: list[int] | None = None        # None: every task of the suite
    workers: int = 1
    shard: tuple[int, int] = (0, 1)
    video: str = "none"
    render: str = "query"                 # "query": render-on-query; "every": every step (openpi's way)
    renderer: str = "auto"
    episode_timeout_s: float = 1800.0
    retries: int = 2
    request_timeout_s: float = 30.0
    server_retries: int = 8
    ready_timeout_s: float = 120.0
    threads_per_worker: int | None = None
    progress: bool = True

    @classmethod
    def from_config_file(cls, path: str, **overrides: Any) -> "EvalConfig":
        from vla.config import Config

        cfg = Config.fromfile(path)
        if "eval" not in cfg:
            raise SimClientError(f"{path}: no `eval` section (expected eval = dict(task_suite_name=..., ...))")
        known = {f for f in cls.__dataclass_fields__}
        section = {k: v for k, v in dict(cfg["eval"]).items() if k in known}
        section.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**section)

    def suites(self) -> list[str]:
        return [s.strip() for s in self.task_suite_name.split(",") if s.strip()]


@dataclass
class EvalResult:
    out: Path
    summary: dict[str, Any]
    table: str
    complete: bool
    recorded: int
    stats: dict[str, Any] = field(default_factory=dict)


def plan_episodes(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Every episode of the run (before resume and sharding), in task order."""
    episodes = []
    valid = suites.suite_names()
    for suite in cfg.suites():
        if suite not in valid:
            raise SimClientError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(valid)}")
        tasks = suites.get_tasks(suite)
        ids = cfg.tasks if cfg.tasks is not None else range(len(tasks))
        for t in ids:
            if not 0 <= t < len(tasks):
                raise SimClientError(f"--tasks: {suite} has tasks 0..{len(tasks) - 1}, got {t}")
        max_steps = cfg.max_steps or suites.max_steps(suite)
        for t in ids:
            for trial in range(cfg.num_trials_per_task):
                episodes.append(dict(suite=suite, task_id=int(t), trial=trial, seed=cfg.seed, max_steps=max_steps,
                                     num_steps_wait=cfg.num_steps_wait, actions_per_query=cfg.eval_chunk_size))
    return episodes


def _server_info(policy: Any, cfg: EvalConfig) -> ServerInfo:
    from sim_client.policy import make_policy

    p = make_policy(policy, timeout_s=cfg.request_timeout_s, retries=cfg.server_retries,
                    ready_timeout_s=cfg.ready_timeout_s) if isinstance(policy, str) else make_policy(policy)
    try:
        return p.info()
    finally:
        p.close()


def run_eval(cfg: EvalConfig, policy: str | Callable[[], Any], out: str | Path,
             log: Callable[[str], None] = _logger.info) -> EvalResult:
    """Run (or resume) an evaluation into `out`; returns the summary of every recorded episode."""
    from sim_client.policy import RequestBuilder
    from sim_client.pool import WorkerPool
    from sim_client.render import choose_renderer, worker_env

    out = Path(out)
    suites.ensure_libero_config()
    episodes = plan_episodes(cfg)
    tasks_text = {(s, t.task_id): t.language for s in cfg.suites() for t in suites.get_tasks(s)}
    mine = {(e["suite"], e["task_id"], e["trial"]) for e in episodes}
    mine = set(select_shard(mine, cfg.shard))
    info = _server_info(policy, cfg)  # before touching OUT: an unreachable server leaves nothing behind
    results = ResultsFile(out / "results.jsonl")
    todo = [e for e in episodes if (e["suite"], e["task_id"], e["trial"]) in mine
            and (e["suite"], e["task_id"], e["trial"]) not in results.done]
    skipped = len(mine) - len(todo)
    if skipped:
        log(f"sim_client: resuming: {skipped} of {len(mine)} episodes already in {results.path}")

    builder = RequestBuilder(info, resize_size=cfg.resize_size)
    renderer, renderer_fps = choose_renderer(cfg.renderer)
    threads = cfg.threads_per_worker or max(1, (_cores() // max(1, cfg.workers)))
    worker_cfg = {
        "policy": policy, "server_info": info, "resize_size": cfg.resize_size, "render": cfg.render,
        "video": cfg.video, "out": str(out),
        "client_kwargs": {"timeout_s": cfg.request_timeout_s, "retries": cfg.server_retries,
                          "ready_timeout_s": cfg.ready_timeout_s} if isinstance(policy, str) else {},
    }
    log(f"sim_client: {len(todo)} episodes, {cfg.workers} worker(s), renderer {renderer}, render-on-{cfg.render}, "
        f"layout {builder.layout}, cameras {list(builder.cameras)}, server model {info.model or '?'!r}")

    t0 = time.monotonic()
    bar = _progress(len(todo), cfg.progress)
    counts = {"success": 0, "done": 0, "errors": 0, "steps": 0}

    def on_result(line: dict[str, Any]) -> None:
        if not line.get("task"):
            line["task"] = tasks_text.get((line["suite"], line["task_id"]), "")
        results.append(line)
        counts["done"] += 1
        counts["success"] += bool(line.get("success")) and not line.get("error")
        counts["errors"] += bool(line.get("error"))
        counts["steps"] += int(line.get("steps") or 0)
        if bar is not None:
            elapsed = max(1e-9, time.monotonic() - t0)
            judged = counts["done"] - counts["errors"]
            bar.set_postfix(success=f"{counts['success']}/{judged}", errors=counts["errors"],
                            steps_s=f"{counts['steps'] / elapsed:.1f}", refresh=False)
            bar.update(1)

    pool = WorkerPool(cfg.workers, worker_cfg, worker_env(renderer, threads),
                      episode_timeout_s=cfg.episode_timeout_s, retries=cfg.retries)
    try:
        complete = pool.run(todo, on_result) if todo else True
    finally:
        if bar is not None:
            bar.close()
        results.close()
    elapsed = time.monotonic() - t0
    mine_lines = [line for line in results.lines
                  if (line["suite"], line["task_id"], line["trial"]) in mine]
    extra = {
        "renderer": renderer, "renderer_fps": renderer_fps, "render": cfg.render, "workers": cfg.workers,
        "server": policy if isinstance(policy, str) else getattr(policy, "__name__", repr(policy)),
        "server_model": info.model or None, "model_versions": sorted({str(x.get("model_version")) for x in mine_lines
                                                                     if x.get("model_version")}),
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "replan": replan_record(cfg.eval_chunk_size),
        "this_run": {"episodes": counts["done"], "elapsed_s": round(elapsed, 2),
                     "episodes_per_min": round(60 * counts["done"] / elapsed, 3) if elapsed > 0 else None,
                     "steps_per_s": round(counts["steps"] / elapsed, 2) if elapsed > 0 else None,
                     "workers_replaced": pool.stats.replaced, "retries": pool.stats.retried,
                     "timeouts": pool.stats.timeouts, "crashes": pool.stats.crashes},
        "complete": complete and len(mine_lines) == len(mine),
        "missing": len(mine) - len(mine_lines),
    }
    summary = write_report(out, mine_lines, extra)
    table = format_table(summary)
    return EvalResult(out=out, summary=summary, table=table, complete=extra["complete"],
                      recorded=len(mine_lines), stats=extra["this_run"])


# The two replanning conventions in use: actions executed per policy query.
REPLAN_CONVENTIONS = {5: "openpi's replan_steps=5", 10: "FluxVLA's eval_chunk_size=10"}


def replan_record(steps: int) -> dict[str, Any]:
    """Which replanning chunk ran, for summary.json and the report."""
    return {"steps": int(steps), "convention": REPLAN_CONVENTIONS.get(int(steps), "custom --chunk-size")}


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ep", desc="episodes", dynamic_ncols=True)
