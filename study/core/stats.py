"""Resampling statistics every published number carries (docs/concepts/statistics.md), and the galleries' ranking.

Records are resampled within each side of a test (stratified bootstrap), and gaps are tested with
a paired randomisation test that swaps each record's target and reference outcome with
probability 1/2. The tests' draws each have their own generator (``draw_rng``), keyed by (seed,
purpose, side, draw), so a caller may split draws any way it likes (chunks in one process, tasks
on a cluster) and still get the same numbers. ``bootstrap_indices`` gives (draws, n) matrices from
one sequential stream (the linear probe's small intervals).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np

# A draw's purpose is part of its generator's key, so bootstrap and swap draws never share a stream.
BOOTSTRAP, SWAP = 0, 1


def bootstrap_indices(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) row indices sampled with replacement."""
    if n == 0:
        return np.zeros((draws, 0), dtype=np.int64)
    return rng.integers(0, n, size=(draws, n))


def swap_masks(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) booleans: True where a record's target and reference outcomes are swapped."""
    return rng.random((draws, n)) < 0.5


def draw_rng(seed: int, purpose: int, side: int, draw: int) -> np.random.Generator:
    """The generator of one draw: a pure function of its key, independent of any other draw."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, side, draw)))


def resample_indices(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int64 row indices of one bootstrap resample, sampled with replacement."""
    return rng.integers(0, n, size=n)


def swap_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool, one swap draw: each record swapped with probability 1/2 (one random bit each)."""
    return np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8), count=n).view(bool)


# Indices or bits of a draw generated at a time where a block of a side is drawn (``block_counts``).
STREAM = 1 << 20


def block_counts(total: int, offset: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) bootstrap counts of the records at positions offset .. offset + n - 1 of a side of
    ``total`` records: the whole resample (``resample_indices(total, rng)``) is generated in
    pieces of STREAM and only this block's indices are counted, so the blocks of a side together
    hold the counts of the one resample (the stream does not depend on the piece size)."""
    if offset == 0 and n == total:
        return np.bincount(resample_indices(total, rng), minlength=total)
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, total, STREAM):
        idx = rng.integers(0, total, size=min(STREAM, total - start))
        idx = idx[(idx >= offset) & (idx < offset + n)] - offset
        counts += np.bincount(idx, minlength=n)
    return counts


def block_swap_mask(total: int, offset: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: this block's part (positions offset .. offset + n - 1) of ``swap_mask(total, rng)``:
    the bytes up to the block's end are generated, those before the block's first byte dropped."""
    if offset == 0 and n == total:
        return swap_mask(total, rng)
    raw = np.frombuffer(rng.bytes((offset + n + 7) // 8), dtype=np.uint8)[offset // 8:]
    return np.unpackbits(raw, count=offset % 8 + n).view(bool)[offset % 8:]


def draw_chunks(draws: int, elements_per_draw: int, chunk_elements: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks of draws, each at most chunk_elements elements (>= 1 draw)."""
    step = max(1, chunk_elements // max(elements_per_draw, 1))
    for start in range(0, draws, step):
        yield start, min(start + step, draws)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0: (lo, hi) with the given central coverage."""
    alpha = (1.0 - level) / 2.0
    return np.quantile(samples, alpha, axis=0), np.quantile(samples, 1.0 - alpha, axis=0)


def permutation_p_value(observed: np.ndarray, null_samples: np.ndarray) -> np.ndarray:
    """Two-sided p-value, (1 + #{|null| >= |observed|}) / (1 + draws); never exactly 0.

    A small tolerance keeps exact ties (e.g. a gap of 0 against itself) counted as "as extreme".
    """
    observed = np.asarray(observed, dtype=np.float64)
    null_samples = np.asarray(null_samples, dtype=np.float64)
    extreme = np.abs(null_samples) >= np.abs(observed)[None, ...] - 1e-12
    return (1.0 + extreme.sum(axis=0)) / (1.0 + null_samples.shape[0])


def pooled_ids(id_arrays: Sequence[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Text of records pooled side after side: positions (k,) into the pooled order -> (k,) str."""
    offsets = np.cumsum([0] + [len(a) for a in id_arrays])

    def ids_at(positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        side = np.searchsorted(offsets, positions, side="right") - 1
        text = np.empty(len(positions), dtype=object)
        for k, ids in enumerate(id_arrays):
            at = side == k
            text[at] = np.asarray(ids)[positions[at] - offsets[k]].astype(str)
        return text.astype(str)

    return ids_at


def top_by_score(score: np.ndarray, ids_at: Callable[[np.ndarray], np.ndarray], top: int) -> np.ndarray:
    """Positions of the first ``top`` records by score descending, then id text, then position.

    Only records that can make the cut (score at least the top-th largest) are turned into text,
    so a gallery of 20 over 10^7 records converts about 20 ids, not 10^7. score (n,) -> (<= top,).
    """
    n = len(score)
    top = max(0, min(top, n))
    if top == 0:
        return np.zeros(0, dtype=np.int64)
    threshold = np.partition(score, n - top)[n - top]
    candidates = np.flatnonzero(score >= threshold)
    order = np.lexsort((ids_at(candidates), -score[candidates]))  # stable: equal keys keep position order
    return candidates[order[:top]]


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact enough for n up to ~10^5)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
               + i * math.log(p) + (n - i) * math.log1p(-p))
    return float(min(1.0, np.exp(log_pmf).sum()))


def binomial_interval(k: int, n: int, level: float) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a proportion k / n at the given central coverage.

    Written by hand (bisection on the binomial tails) because SciPy's beta quantile is the only
    library form and SciPy is not otherwise a dependency: lo solves P(X >= k | lo) = (1 - level)/2,
    hi solves P(X <= k | hi) = (1 - level)/2; lo = 0 when k = 0 and hi = 1 when k = n.
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"binomial_interval needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    tail = (1.0 - level) / 2.0

    def solve(f, increasing: bool) -> float:  # f(p) - tail changes sign once on (0, 1)
        a, b = 0.0, 1.0
        for _ in range(60):
            mid = (a + b) / 2
            if (f(mid) < tail) == increasing:
                a = mid
            else:
                b = mid
        return (a + b) / 2

    lo = 0.0 if k == 0 else solve(lambda p: 1.0 - _binomial_cdf(k - 1, n, p), increasing=True)
    hi = 1.0 if k == n else solve(lambda p: _binomial_cdf(k, n, p), increasing=False)
    return lo, hi
