"""ParquetDataset throughput over raw PyAV decoding of the same frames, side by side.

A 400-episode LIBERO-format dataset (2 cameras 256×256, written once and reused under
--work-dir). The same random sample indices are read two ways, alternating, with 0 and
with 2 DataLoader workers:

    raw     for each sample, each camera: av.open, seek, decode to the row's frame, rgb24, close
    loader  ParquetDataset with the guide config's transforms (inputs, prompt, tokenizer, resize to 224,
            normalise images, normalise states/actions), action window 10

The ratio is loader samples/s over raw samples/s (median of the rounds); goal >= 0.70 for
both worker counts. RSS is sampled while the loader walks the 400-episode index in random
order; it must stay flat (growth after warm-up under 32 MiB).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from vla.data import DictCollator, DistributedRepeatingDataset, ParquetDataset  # noqa: E402
from vla.data.reader import LeRobotReader  # noqa: E402
from vla.data.synthetic import write_synthetic_libero_dataset  # noqa: E402
from vla.data.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402

CAMERAS = ["observation.images.image", "observation.images.wrist_image"]
MEANS = [[123.515625, 116.04492188, 103.59375]] * 2
STDS = [[58.27148438, 57.02636719, 57.27539062]] * 2
GOAL = 0.70
RSS_LIMIT_MB = 32


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def raw_frame(path: Path, timestamp: float) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(timestamp / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.time >= timestamp - 1e-4:
                return frame.to_ndarray(format="rgb24")
    raise RuntimeError(f"{path}: no frame at {timestamp}")


class RawDecode(Dataset):
    """The baseline: the same frames, decoded with PyAV and nothing else."""

    def __init__(self, root: Path, targets: list[tuple[int, float]]):
        self.meta = LeRobotReader(root).meta
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        ep, ts = self.targets[i]
        return np.stack([raw_frame(self.meta.video_file(key, ep), ts) for key in CAMERAS])


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def build_loader_dataset(root: Path, tokenizer: Path) -> ParquetDataset:
    transforms = [
        dict(type="ProcessParquetInputs", parquet_keys=["observation.state", "timestamp", "actions", "info", "stats",
                                                        "action_masks"],
             video_keys=CAMERAS, name_mappings={"observation.state": ["states"], "actions": ["actions"]}),
        dict(type="ParquetPrompter"),
        dict(type="ProcessPrompts", max_len=48, tokenizer=dict(type="PretrainedTokenizer", model_path=str(tokenizer))),
        dict(type="ResizeImages", height=224, width=224),
        dict(type="NormalizeImages", means=MEANS, stds=STDS),
        dict(type="NormalizeStatesAndActions", action_dim=14, state_key="proprio", action_key="action"),
    ]
    inner = ParquetDataset(str(root), transforms=transforms, action_window_size=10, window_start_idx=0,
                           statistic_name="bench")
    DistributedRepeatingDataset(inner, statistic_keys=["observation.state", "action"],
                                name_mappings={"observation.state": ["proprio"]}, statistic_name="bench")
    return inner


def timed(dataset, workers: int, collate=None) -> float:
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate or (lambda b: b),
                        persistent_workers=False)
    start = time.perf_counter()
    count = sum(len(batch["states"]) if isinstance(batch, dict) else len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/bench/data_loader"))
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--episode-length", type=int, default=10)
    parser.add_argument("--samples", type=int, default=160, help="samples per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = args.work_dir / "libero_256"
    t0 = time.perf_counter()
    write_synthetic_libero_dataset(root, num_episodes=args.episodes, episode_length=args.episode_length,
                                   image_size=256)
    tokenizer = args.work_dir / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        build_tiny_tokenizer(tokenizer)
    print(f"dataset: {args.episodes} episodes × {args.episode_length} frames, 2 cameras 256×256 at {root} "
          f"(ready in {time.perf_counter() - t0:.1f}s)")

    dataset = build_loader_dataset(root, tokenizer)
    collate = DictCollator(keys=["states", "images", "img_masks", "lang_tokens", "lang_masks", "actions",
                                 "action_masks"], meta_keys=["prompt"])
    rng = np.random.default_rng(0)
    ratios: dict[int, float] = {}
    for workers in (0, 2):
        per_round = []
        for r in range(args.rounds):
            indices = rng.choice(len(dataset), size=args.samples, replace=False).tolist()
            targets = []
            for i in indices:
                reader, ep, row = dataset.locate(i)
                targets.append((ep, float(reader.episode_columns(ep)["timestamp"][row])))
            raw = timed(RawDecode(root, targets), workers)
            ours = timed(Subset(dataset, indices), workers, collate)
            per_round.append(ours / raw)
            print(f"workers={workers} round {r}: raw PyAV {raw:7.1f} samples/s, ParquetDataset {ours:7.1f} "
                  f"samples/s, ratio {ours / raw:.2f}")
        ratios[workers] = statistics.median(per_round)
        print(f"workers={workers}: median ratio {ratios[workers]:.2f}")

    # Memory over the whole 400-episode index in random order (one process).
    order = rng.permutation(len(dataset))
    warm = min(len(order) // 3, 800)
    for i in order[:warm]:
        dataset[int(i)]
    base = rss_mb()
    peak = base
    for k, i in enumerate(order[warm:]):
        dataset[int(i)]
        if k % 100 == 0:
            peak = max(peak, rss_mb())
    peak = max(peak, rss_mb())
    growth = peak - base
    print(f"memory: RSS {base:.0f} MiB after {warm} random samples, peak {peak:.0f} MiB over "
          f"{len(order) - warm} more (growth {growth:.1f} MiB, limit {RSS_LIMIT_MB})")

    ratio = min(ratios.values())
    ok = ratio >= GOAL and growth < RSS_LIMIT_MB
    print(f"RESULT data_loader_vs_raw_pyav {ratio:.2f} goal >= {GOAL} {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
