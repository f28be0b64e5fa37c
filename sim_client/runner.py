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
from sim_client.worker import WorkerConfig
from vla.wire.server_info import ServerInfo

_logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """The `eval` section of FluxVLA's configs (its LiberoEvalRunner) plus the client's own knobs."""
    task_suite_name: str = "libero_10"
    num_trials_per_task: int | None = None   # None: 50, or 1 for LIBERO-plus (each instance once)
    seed: int = 7
    eval_chunk_size: int = 10
    num_steps_wait: int = 10
    resize_size: int = 224
    max_steps: int | None = None          # None: openpi's budget for the suite
    tasks: list[int] | None = None        # None: every task of the suite
    dimensions: list[str] | None = None   # robustness suites: only tasks whose perturbation dimension matches
    workers: int = 1
    shard: tuple[int, int] = (0, 1)
    video: str = "none"
    render: str = "query"                 # "query": render-on-query; "every": every step (openpi's way)
    renderer: str = "auto"
    episode_timeout_s: float = 1800.0
    retries: int = 2
    keep_errors: bool = False             # resume keeps episodes recorded with an error instead of re-running them
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
        # The config schema has checked every key; these belong to the server, which owns every
        # model-specific step (`model_family` included: the server's model type decides).
        unused = sorted(k for k in dict(cfg["eval"]) if k not in known and k != "type")
        if unused:
            _logger.info("%s: eval keys %s are the policy server's, not used by the sim client", path, unused)
        section.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**section)

    def suites(self) -> list[str]:
        """The suites named, `libero_plus` / `libero_pro` standing for all of theirs."""
        return suites.expand_suites([s.strip() for s in self.task_suite_name.split(",") if s.strip()])

    def trials(self, suite: str) -> int:
        bench, _ = suites.benchmark_of(suite)
        if bench is suites.LIBERO_PLUS:
            if self.num_trials_per_task not in (None, 1):
                raise SimClientError(f"{suite}: LIBERO-plus evaluates each of its instances once; pass --trials 1 "
                                 f"(got {self.num_trials_per_task})")
            return 1
        return 50 if self.num_trials_per_task is None else self.num_trials_per_task


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
    if cfg.eval_chunk_size < 1:
        raise SimClientError(f"--chunk-size must be >= 1, got {cfg.eval_chunk_size}")
    benches = {suites.benchmark_of(s)[0].title for s in cfg.suites()}
    if len(benches) > 1:
        raise SimClientError(f"suites of {sorted(benches)} in one run: each benchmark has its own simulator "
                         f"package, so run each in a run (and --out) of its own")
    picked: list[suites.Task] = []
    for suite in cfg.suites():
        if suite not in valid:
            raise SimClientError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(valid)}")
        tasks = suites.get_tasks(suite)
        ids = cfg.tasks if cfg.tasks is not None else range(len(tasks))
        for t in ids:
            if not 0 <= t < len(tasks):
                raise SimClientError(f"--tasks: {suite} has tasks 0..{len(tasks) - 1}, got {t}")
        if cfg.dimensions is not None:
            ids = [t for t in ids if _dimension_matches(tasks[t], cfg.dimensions)]
        picked += [tasks[t] for t in ids]
        max_steps = cfg.max_steps or suites.max_steps(suite)
        for t in ids:
            for trial in range(cfg.trials(suite)):
                episodes.append(dict(suite=suite, task_id=int(t), trial=trial, seed=cfg.seed, max_steps=max_steps,
                                     num_steps_wait=cfg.num_steps_wait, actions_per_query=cfg.eval_chunk_size))
    if cfg.dimensions is not None:
        unknown = [d for d in cfg.dimensions if not any(_dimension_matches(t, [d]) for t in picked)]
        if unknown:
            known = sorted({t.dimension for s in cfg.suites() for t in suites.get_tasks(s) if t.dimension})
            raise SimClientError(f"--dimension {','.join(unknown)} matches no task of {cfg.task_suite_name} "
                             f"(dimensions: {known or 'none: not a robustness suite'})")
    _refuse_what_cannot_run(picked)
    return episodes


def _dimension_matches(task: suites.Task, wanted: list[str]) -> bool:
    """`--dimension camera,noise`: the start of a word of the task's dimension or level, any case."""
    text = f"{task.dimension or ''} {task.level or ''}".lower().replace("(", " ").replace(")", " ")
    return any(any(w.startswith(x.strip().lower()) for w in text.split()) for x in wanted if x.strip())


def _refuse_what_cannot_run(tasks: list[suites.Task]) -> None:
    """LIBERO-plus tasks this install cannot run are refused up front, naming why and how many."""
    from collections import Counter

    from sim_client.robustness import plus_cannot_run

    plus = [t for t in tasks if t.benchmark == suites.LIBERO_PLUS.key]
    if not plus:
        return
    assets = suites._assets_dir(suites.LIBERO_PLUS)
    why = {(t.dimension, t.level): plus_cannot_run(assets, t.dimension, t.level) for t in plus}
    bad: dict[str, Counter] = {}
    for t in plus:
        if why[(t.dimension, t.level)]:
            bad.setdefault(why[(t.dimension, t.level)], Counter())[_label(t)] += 1
    if bad:
        parts = [", ".join(f"{n} {label}" for label, n in sorted(c.items())) + f" tasks: {reason}"
                 for reason, c in bad.items()]
        ok = sorted({_label(t) for t in plus if not why[(t.dimension, t.level)]})
        raise SimClientError("LIBERO-plus cannot run " + "; ".join(parts) + ". Select what runs with --dimension "
                         f"(words of: {ok})")


def _label(task: suites.Task) -> str:
    return task.dimension + (f" ({task.level})" if task.level else "")


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
    tasks_meta = {(s, t.task_id): t for s in cfg.suites() for t in suites.get_tasks(s)}
    mine = {(e["suite"], e["task_id"], e["trial"]) for e in episodes}
    mine = set(select_shard(mine, cfg.shard))
    info = _server_info(policy, cfg)  # before touching OUT: an unreachable server leaves nothing behind
    results = ResultsFile(out / "results.jsonl")
    rerun = 0 if cfg.keep_errors else results.drop_errors(mine)
    if rerun:
        log(f"sim_client: resuming: re-running {rerun} episode(s) recorded with an infrastructure error "
            f"(--keep-errors keeps them)")
    todo = [e for e in episodes if (e["suite"], e["task_id"], e["trial"]) in mine
            and (e["suite"], e["task_id"], e["trial"]) not in results.done]
    skipped = len(mine) - len(todo)
    if skipped:
        log(f"sim_client: resuming: {skipped} of {len(mine)} episodes already in {results.path}")

    builder = RequestBuilder(info, resize_size=cfg.resize_size)
    renderer, renderer_fps = choose_renderer(cfg.renderer)
    threads = cfg.threads_per_worker or max(1, (_cores() // max(1, cfg.workers)))
    worker_cfg = WorkerConfig(
        policy=policy, server_info=info, resize_size=cfg.resize_size, render=cfg.render, video=cfg.video,
        out=str(out),
        client_kwargs={"timeout_s": cfg.request_timeout_s, "retries": cfg.server_retries,
                       "ready_timeout_s": cfg.ready_timeout_s} if isinstance(policy, str) else {})
    log(f"sim_client: {len(todo)} episodes, {cfg.workers} worker(s), renderer {renderer}, render-on-{cfg.render}, "
        f"layout {builder.layout}, cameras {list(builder.cameras)}, server model {info.model or '?'!r}")

    t0 = time.monotonic()
    bar = _progress(len(todo), cfg.progress)
    counts = {"success": 0, "done": 0, "errors": 0, "steps": 0}

    def on_result(line: dict[str, Any]) -> None:
        task = tasks_meta.get((line["suite"], line["task_id"]))
        if not line.get("task"):
            line["task"] = task.language if task else ""
        if task is not None and task.dimension:
            line.update(task_name=task.name, dimension=task.dimension, level=task.level)
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
        "replan": replan_record(cfg.eval_chunk_size, builder.chunk_length),
        "this_run": {"episodes": counts["done"], "elapsed_s": round(elapsed, 2),
                     "episodes_per_min": round(60 * counts["done"] / elapsed, 3) if elapsed > 0 else None,
                     "steps_per_s": round(counts["steps"] / elapsed, 2) if elapsed > 0 else None,
                     "workers_replaced": pool.stats.replaced, "retries": pool.stats.retried,
                     "timeouts": pool.stats.timeouts, "crashes": pool.stats.crashes},
        "rerun_errors": rerun,
        "complete": complete and len(mine_lines) == len(mine),
        "missing": len(mine) - len(mine_lines),
    }
    summary = write_report(out, mine_lines, extra)
    table = format_table(summary)
    return EvalResult(out=out, summary=summary, table=table, complete=extra["complete"],
                      recorded=len(mine_lines), stats=extra["this_run"])


# The two replanning conventions in use: actions executed per policy query.
REPLAN_CONVENTIONS = {5: "openpi's replan_steps=5", 10: "FluxVLA's eval_chunk_size=10"}


def replan_record(steps: int, server_chunk: int = 0) -> dict[str, Any]:
    """Which replanning chunk ran, for summary.json and the report: `steps` per query, fewer when the
    server declares shorter chunks (`server_chunk_length`, None when it declares none)."""
    executed = min(steps, server_chunk) if server_chunk else steps
    return {"steps": int(executed), "convention": REPLAN_CONVENTIONS.get(int(executed), "custom --chunk-size"),
            "server_chunk_length": int(server_chunk) or None}


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
