"""Runner step time over a minimal hand-written training loop: same model, same batch, one run.

Model: the tiny pi0 config (PI0FlowMatching at toy widths), built the same way (same seed) for
both loops. Batch: `per_device_batch_size` samples produced once by the config's real data
pipeline (synthetic LIBERO episodes), fed every step through the config's DictCollator.

    hand    collate -> forward -> backward -> clip_grad_norm_ -> AdamW step -> zero_grad
    runner  DDPTrainRunner.run() on a dataset that yields the same samples: everything the
            runner does per step (scheduler, accumulation bookkeeping, loss all-reduce, grad
            norm, metrics.jsonl line, tqdm) is inside its step time

Step time = the gap between consecutive finished steps after warm-up, in this process's CPU
time (`time.process_time`, one thread): on this shared 2-core machine wall-clock gaps mostly
measure the other tenants, CPU time measures our work. The runner stamps each metrics.jsonl line
with `time.time()`; the benchmark points the runner module's clock at process_time so both loops
use the same clock. Wall-clock medians are printed too. The loops alternate (order swapped each
round) for --rounds rounds; the ratio is runner / hand over the medians of the pooled gaps.
Goal <= 1.1.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import types  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import IterableDataset  # noqa: E402

from trainer.distributed import DistInfo  # noqa: E402
import trainer.loop  # noqa: E402
from trainer.runners import DDPTrainRunner  # noqa: E402
from trainer.state import seed_everything  # noqa: E402
from vla.config import Config, build, register  # noqa: E402
from vla.data.synthetic import write_synthetic_libero_dataset  # noqa: E402
from vla.data.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py"
GOAL = 1.1
SEED = 42


class FixedSamples(IterableDataset):
    """The interface the runner needs from DistributedRepeatingDataset, over fixed samples."""

    def __init__(self, samples, length, statistics_source):
        self.samples, self.length, self.source = samples, length, statistics_source

    def __len__(self):
        return self.length

    def __iter__(self):
        for i in range(self.length):
            yield self.samples[i % len(self.samples)]

    def set_epoch(self, epoch, skip=0):
        pass

    def set_batch_size(self, batch_size):
        pass

    def save_statistics(self, path):
        return self.source.save_statistics(path)

    def run_info(self):
        return self.source.run_info()


_DATASET: FixedSamples | None = None


@register
def TrainerOverheadSamples() -> FixedSamples:  # noqa: N802 - a config type name
    """The config type the runner builds: the fixed samples prepared in main()."""
    return _DATASET


def hand_loop(cfg, samples, collate, steps: int) -> list[float]:
    seed_everything(SEED)
    model = build(cfg.model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.runner["learning_rate"])
    seed_everything(SEED)
    stamps = []
    for _ in range(steps):
        out = model(collate(samples))
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(CLOCK())
    return stamps


def runner_loop(cfg, dataset, steps: int, work_dir: Path) -> list[float]:
    cfg = Config(copy.deepcopy(dict(cfg)), filename=cfg.filename)
    global _DATASET
    _DATASET = dataset
    cfg["train_dataloader"]["dataset"] = {"type": "TrainerOverheadSamples"}
    runner = build(cfg.runner, config=cfg, work_dir=work_dir, max_steps=steps, max_epochs=1,
                   save_step_interval=None,
                   dist_info=DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu")))
    assert isinstance(runner, DDPTrainRunner)
    runner.run()
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["time"] for line in lines]


CLOCK = time.process_time


def runner_clock(fn):
    """The runner's `time.time()` (its metrics stamp) read from CLOCK; everything else unchanged."""
    trainer.loop.time = types.SimpleNamespace(time=fn, perf_counter=time.perf_counter)


def gaps(stamps: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="trainer_overhead.") as tmp:
        tmp = Path(tmp)
        data = write_synthetic_libero_dataset(tmp / "data", num_episodes=2, episode_length=8, image_size=64)
        tok = build_tiny_tokenizer(tmp / "tok")
        cfg = Config.fromfile(CONFIG, [f"train_dataloader.dataset.datasets.data_root_path={data}",
                                       f"train_dataloader.dataset.datasets.transforms.2.tokenizer.model_path={tok}",
                                       "runner.metric.active_trackers=['jsonl']"])
        per_device = cfg.train_dataloader["per_device_batch_size"]
        source = build(cfg.train_dataloader["dataset"])
        samples = [source.get_item(i) for i in range(per_device)]
        collate = build(cfg.runner["collator"])
        dataset = FixedSamples(samples, per_device * args.steps, source)

        hand, run, wall_hand, wall_run = [], [], [], []
        global CLOCK
        for r in range(args.rounds):  # alternate which loop goes first: load drifts on a shared machine
            order = ("hand", "runner") if r % 2 == 0 else ("runner", "hand")
            for which in order:
                for clock, hand_out, run_out in ((time.process_time, hand, run),
                                                 (time.perf_counter, wall_hand, wall_run)):
                    CLOCK = clock
                    runner_clock(clock)
                    if which == "hand":
                        h = gaps(hand_loop(cfg, samples, collate, args.steps), args.warmup)
                        hand_out += h
                    else:
                        g = gaps(runner_loop(cfg, dataset, args.steps, tmp / f"run{r}{clock.__name__}"),
                                 args.warmup)
                        run_out += g
            print(f"round {r}: wall hand {statistics.median(h) * 1e3:.1f} ms/step, "
                  f"runner {statistics.median(g) * 1e3:.1f} ms/step", flush=True)
    hand_ms, run_ms = statistics.median(hand) * 1e3, statistics.median(run) * 1e3
    ratio = run_ms / hand_ms
    wall_h, wall_r = statistics.median(wall_hand) * 1e3, statistics.median(wall_run) * 1e3
    print(f"model pi0 tiny, batch {per_device}, {args.steps} steps x {args.rounds} rounds (warm-up {args.warmup}): "
          f"CPU hand {hand_ms:.2f} ms/step, runner {run_ms:.2f} ms/step; wall hand {wall_h:.2f}, "
          f"runner {wall_r:.2f} (ratio {wall_r / wall_h:.3f})")
    print(f"RESULT trainer_overhead {ratio:.3f} goal <= {GOAL} {'PASS' if ratio <= GOAL else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
