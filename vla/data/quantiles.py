"""Exact quantiles of a column stream in bounded memory (numpy's default linear interpolation).

`np.quantile(x, q)` needs the order statistics at ranks floor(q·(n-1)) and the next one.
Each pass over the stream histograms the values still in question per (dimension, rank)
and narrows to the bin holding that rank; once a bin is small enough, one more pass
collects its values and sorts them. Memory is O(bins + max_collect) per target, however
long the stream; a typical dataset needs two or three passes over just these columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

Chunks = Callable[[], Iterable[np.ndarray]]  # each call starts a new pass: arrays [n_i, d]


@dataclass
class _Target:
    dim: int
    rank: int
    levels: list[tuple[float, float, int]] = field(default_factory=list)  # (lo, hi, bin) chain
    lo: float = 0.0
    hi: float = 0.0
    below: int = 0  # values of this dimension ranked before the current range
    value: float | None = None


def _bin_index(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    idx = np.floor((x - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def _in_range(x: np.ndarray, levels: list[tuple[float, float, int]], bins: int) -> np.ndarray:
    keep = np.ones(len(x), dtype=bool)
    for lo, hi, b in levels:
        keep &= (x >= lo) & (x <= hi)
        keep[keep] = _bin_index(x[keep], lo, hi, bins) == b
    return keep


def _column_pass(chunks: Chunks, dims: int):
    for chunk in chunks():
        chunk = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)
        if chunk.shape[1] != dims:
            raise ValueError(f"chunk has {chunk.shape[1]} columns, expected {dims}")
        yield chunk


def exact_quantiles(chunks: Chunks, quantiles: Sequence[float], *, bins: int = 4096,
                    max_collect: int = 200_000) -> np.ndarray:
    """[len(quantiles), d] array equal to np.quantile over the concatenated chunks (axis 0)."""
    first = None
    n = 0
    lo = hi = None
    for chunk in chunks():  # pass 0: size and range
        chunk = np.asarray(chunk, dtype=np.float64)
        chunk = chunk.reshape(len(chunk), -1)
        if first is None:
            first = chunk.shape[1]
            lo, hi = np.full(first, np.inf), np.full(first, -np.inf)
        if len(chunk):
            lo = np.minimum(lo, chunk.min(axis=0))
            hi = np.maximum(hi, chunk.max(axis=0))
        n += len(chunk)
    if not n:
        raise ValueError("no values to compute quantiles of")
    dims = first
    positions = [float(q) * (n - 1) for q in quantiles]
    ranks = sorted({r for p in positions for r in (int(np.floor(p)), min(int(np.floor(p)) + 1, n - 1))})
    targets = [_Target(j, r, lo=lo[j], hi=hi[j]) for j in range(dims) for r in ranks]

    while True:
        for t in targets:
            if t.value is None and t.lo == t.hi:
                t.value = t.lo  # every value left in range is equal
        pending = [t for t in targets if t.value is None]
        if not pending:
            break
        # One pass: histogram each pending target's current range.
        counts = {id(t): np.zeros(bins, dtype=np.int64) for t in pending}
        for chunk in _column_pass(chunks, dims):
            for t in pending:
                x = chunk[:, t.dim]
                x = x[_in_range(x, t.levels, bins)]
                x = x[(x >= t.lo) & (x <= t.hi)]
                counts[id(t)] += np.bincount(_bin_index(x, t.lo, t.hi, bins), minlength=bins)
        collect: set[int] = set()
        for t in pending:
            c = counts[id(t)]
            cum = np.cumsum(c)
            b = int(np.searchsorted(cum, t.rank - t.below, side="right"))
            t.below += int(cum[b - 1]) if b else 0
            t.levels.append((t.lo, t.hi, b))
            if c[b] <= max_collect:
                collect.add(id(t))
        # Next pass: collect the values of small bins exactly; for large ones find the narrower
        # [min, max] of the bin and histogram that range again.
        found: dict[int, list[np.ndarray]] = {id(t): [] for t in pending}
        for chunk in _column_pass(chunks, dims):
            for t in pending:
                x = chunk[:, t.dim]
                x = x[_in_range(x, t.levels, bins)]
                found[id(t)].append(x if id(t) in collect else
                                    np.array([[x.min(initial=np.inf), x.max(initial=-np.inf)]]))
        for t in pending:
            if id(t) in collect:
                t.value = float(np.sort(np.concatenate(found[id(t)]))[t.rank - t.below])
            else:
                ranges = np.concatenate(found[id(t)])
                t.lo, t.hi = float(ranges[:, 0].min()), float(ranges[:, 1].max())

    by_key = {(t.dim, t.rank): t.value for t in targets}
    out = np.empty((len(quantiles), dims))
    for i, p in enumerate(positions):
        k = int(np.floor(p))
        frac = p - k
        k1 = min(k + 1, n - 1)
        for j in range(dims):
            a, b = by_key[(j, k)], by_key[(j, k1)]
            out[i, j] = a + (b - a) * frac
    return out
