"""`VLAMetric`: per-step training metrics to `metrics.jsonl` (and wandb when available), plus `loss.png`.

Only rank 0 writes. Each line is one optimizer step: step, epoch, loss (the step's mean over
ranks and accumulation micro-batches), loss_smoothed (mean of the last `window_size` losses), lr,
grad_norm, samples_per_s, time. On resume, `truncate_after(step)` drops lines a killed run
wrote past its last checkpoint, so the file ends up with one line per step, none repeated.
"""
from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from vla.config import register
from vla.io import atomic_write, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"
TRACKERS = ("jsonl", "wandb")


@register
class VLAMetric:
    """FluxVLA's metric block. `run_dir`, `wandb_*` and `grad_accumulation_steps` keep their meaning.

    `grad_accumulation_steps` is informational: the runner derives the real value from `batch_size`,
    passes it here, and the first line this process writes records it. `run_dir` is where FluxVLA's
    runs go; here the command line's WORK_DIR is the run's directory, so a `run_dir` that does not
    contain it is reported once (and otherwise unused). wandb is used only when it is installed and
    configured (WANDB_API_KEY or WANDB_MODE set); otherwise one notice line says why not.
    """

    def __init__(self, active_trackers: Sequence[str] = ("jsonl",), run_dir: str = "work_dirs",
                 wandb_project: str | None = None, wandb_entity: str | None = None,
                 grad_accumulation_steps: int = 1, window_size: int = 1, work_dir: str | os.PathLike | None = None,
                 rank: int = 0, run_name: str | None = None):
        unknown = [t for t in active_trackers if t not in TRACKERS]
        if unknown:
            raise ValueError(f"VLAMetric: unknown trackers {unknown}; valid: {', '.join(TRACKERS)}")
        if int(window_size) < 1:
            raise ValueError(f"VLAMetric: window_size must be >= 1, got {window_size}")
        self.active_trackers = tuple(active_trackers)
        self.run_dir = run_dir
        self.wandb_project, self.wandb_entity = wandb_project, wandb_entity
        self.grad_accumulation_steps = int(grad_accumulation_steps)
        self.window_size = int(window_size)
        self.work_dir = Path(work_dir if work_dir is not None else run_dir)
        self.rank = int(rank)
        self.run_name = run_name or self.work_dir.name
        self._window: collections.deque[float] = collections.deque(maxlen=self.window_size)
        self._first_line = True
        if work_dir is not None and self.rank == 0 and not _inside(Path(work_dir), Path(run_dir)):
            log.info("VLAMetric: run_dir=%r is not used: the run writes into WORK_DIR %s (the command line's)",
                     run_dir, work_dir)
        self._file = None
        self._wandb = None

    @property
    def path(self) -> Path:
        return self.work_dir / METRICS_FILENAME

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def start(self, config: dict[str, Any] | None = None, resume_step: int | None = None) -> None:
        if not self.is_writer:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        if "jsonl" in self.active_trackers:
            self._file = open(self.path, "a", encoding="utf-8")
        if "wandb" in self.active_trackers:
            self._wandb = self._start_wandb(config)

    def _start_wandb(self, config: dict[str, Any] | None):
        try:
            import wandb  # noqa: PLC0415 - optional
        except ImportError:
            log.warning("VLAMetric: wandb tracker requested but wandb is not installed; logging to jsonl only")
            return None
        if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            log.warning("VLAMetric: wandb tracker requested but not configured (set WANDB_API_KEY or WANDB_MODE); "
                        "logging to jsonl only")
            return None
        return wandb.init(project=self.wandb_project, entity=self.wandb_entity, name=self.run_name,
                          dir=str(self.work_dir), config=config, resume="allow")

    def truncate_after(self, step: int) -> None:
        """Keep only complete lines with step <= `step` (rewritten atomically); refill the window."""
        if not self.path.exists():
            return
        kept = [r for r in self.records() if int(r.get("step", -1)) <= step]
        write_jsonl(self.path, kept)
        for record in kept[-self.window_size:]:
            self._window.append(float(record["loss"]))

    def log(self, step: int, epoch: int, loss: float, lr: float, grad_norm: float, samples_per_s: float,
            **extra: Any) -> dict[str, Any]:
        self._window.append(float(loss))
        record = {"step": int(step), "epoch": int(epoch), "loss": float(loss),
                  "loss_smoothed": sum(self._window) / len(self._window), "lr": float(lr),
                  "grad_norm": float(grad_norm), "samples_per_s": float(samples_per_s), **extra}
        if self._first_line:
            record["grad_accumulation_steps"] = self.grad_accumulation_steps
            self._first_line = False
        if not self.is_writer:
            return record
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))
        return record

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return read_jsonl(self.path, torn_tail_ok=True)   # a last line cut short by a kill is dropped

    def finish(self) -> Path | None:
        """Close trackers and draw `loss.png` (raw and smoothed loss over steps). Rank 0 only."""
        if not self.is_writer:
            return None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        return plot_loss(self.records(), self.work_dir / "loss.png")


def plot_window(num_steps: int) -> int:
    """The plot's trend window: ~5% of the run, independent of `window_size` (FluxVLA's configs log with 1)."""
    return max(1, min(50, num_steps // 20))


def trailing_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(records: list[dict[str, Any]], path: Path) -> Path | None:
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    window = plot_window(len(losses))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss")
    ax.plot(steps, trailing_mean(losses, window), lw=1.8, label=f"mean of the last {window} steps")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(path.parent.name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False
