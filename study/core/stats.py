"""Resampling statistics every published number carries (DESIGN §2.5).

Records are resampled within each side of a test (stratified bootstrap), and gaps are tested with
a paired randomisation test that swaps each record's target and reference outcome with
probability 1/2. Both are vectorised over draws: (draws, n) index or mask matrices.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_indices(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) row indices sampled with replacement."""
    if n == 0:
        return np.zeros((draws, 0), dtype=np.int64)
    return rng.integers(0, n, size=(draws, n))


def swap_masks(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) booleans: True where a record's target and reference outcomes are swapped."""
    return rng.random((draws, n)) < 0.5


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


def sign_flip_p_value(diffs: Sequence[float], draws: int, rng: np.random.Generator) -> float:
    """Paired sign-flip test of mean(diffs) = 0; the q = 1 special case of the swap test."""
    d = np.asarray(diffs, dtype=np.float64)
    signs = np.where(rng.random((draws, len(d))) < 0.5, -1.0, 1.0)
    null = (signs * d[None, :]).mean(axis=1) if len(d) else np.zeros(draws)
    return float(permutation_p_value(np.asarray(d.mean() if len(d) else 0.0), null[:, None])[0])
