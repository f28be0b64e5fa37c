"""results.jsonl: one line per episode, fsynced per line, resumable, shardable, mergeable.

Only the parent process writes, so a line is either complete or (after a kill mid-write) a
torn tail, which `ResultsFile` cuts off before appending: the file never holds half a line
followed by more data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from sim_client.errors import SimClientError
from vla.io import read_jsonl, write_jsonl

Key = tuple[str, int, int]  # (suite, task_id, trial)

FIELDS = ("suite", "task_id", "task", "trial", "seed", "success", "steps", "error", "failure", "duration_s",
          "video", "model_version", "latency_ms")


def episode_key(line: dict[str, Any]) -> Key:
    return (str(line["suite"]), int(line["task_id"]), int(line["trial"]))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Complete lines of a results file (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    return read_jsonl(path, error=SimClientError, torn_tail_ok=True)


class ResultsFile:
    """Append-only writer; `done` holds the keys already recorded (resume skips them)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self.lines = read_results(self.path)
        self.done: set[Key] = {episode_key(line) for line in self.lines}
        self._f = open(self.path, "a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def append(self, line: dict[str, Any]) -> None:
        key = episode_key(line)
        if key in self.done:
            raise SimClientError(f"episode {key} is already in {self.path}")
        self._f.write(json.dumps(line, sort_keys=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.lines.append(line)
        self.done.add(key)

    def drop_errors(self, keys: Iterable[Key]) -> int:
        """Remove the lines of `keys` recorded with an infrastructure error, so a resume re-runs
        them; the file is rewritten atomically (vla.io). Returns how many were removed."""
        keys = set(keys)
        errored = [line for line in self.lines if line.get("error") and episode_key(line) in keys]
        if not errored:
            return 0
        dropped = {episode_key(line) for line in errored}
        kept = [line for line in self.lines if episode_key(line) not in dropped]
        self._f.close()
        write_jsonl(self.path, kept)
        self._f = open(self.path, "a", encoding="utf-8")   # the rename left the old handle on the old file
        self.lines = kept
        self.done -= dropped
        return len(dropped)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' (0-based i) → (i, n)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SimClientError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SimClientError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def select_shard(keys: Iterable[Key], shard: tuple[int, int]) -> list[Key]:
    """Episodes of shard i of n: every n-th of the sorted list, so shards differ by at most one."""
    i, n = shard
    return [k for j, k in enumerate(sorted(keys)) if j % n == i]


def merge(out: str | os.PathLike, shard_dirs: Iterable[str | os.PathLike],
          expected: Iterable[Key] | None = None) -> dict[str, Any]:
    """Join shard results into OUT/results.jsonl; report duplicates and (if known) missing episodes."""
    seen: dict[Key, dict[str, Any]] = {}
    duplicates: list[Key] = []
    sources = []
    for d in shard_dirs:
        path = Path(d) / "results.jsonl" if Path(d).is_dir() else Path(d)
        if not path.exists():
            raise SimClientError(f"no results file at {path}")
        sources.append(str(path))
        for line in read_results(path):
            key = episode_key(line)
            if key in seen:
                duplicates.append(key)
                continue
            seen[key] = line
    missing = sorted(set(expected) - set(seen)) if expected is not None else []
    lines = [seen[k] for k in sorted(seen)]
    out_path = Path(out) / "results.jsonl"
    write_jsonl(out_path, lines)
    return {"out": str(out_path), "episodes": len(lines), "sources": sources,
            "duplicates": [list(k) for k in duplicates], "missing": [list(k) for k in missing]}
