"""The SSL déjà vu population test (DESIGN §2.1) with its uncertainty (§2.5).

A test has two *sides*. Side "a" holds the records model A trained on: there model A is the
target and model B the reference. Side "b" holds model B's records, with the roles swapped.
Target accuracy is the mean of the two sides' target accuracies, reference accuracy likewise;
at a fraction q each model's accuracy is taken over the top q of the side's records ranked by that
model's own confidence. The null control feeds two halves of a holdout set neither model saw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from study.core import stats

QUADRANTS = ("memorized", "correlated", "forgotten", "misclassified")


@dataclass(frozen=True)
class Side:
    """Per-record outcomes on one side: (n,) arrays aligned by record."""

    ids: np.ndarray
    target_correct: np.ndarray
    target_confidence: np.ndarray
    reference_correct: np.ndarray
    reference_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def topq_accuracy(correct: np.ndarray, confidence: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Accuracy over the top ceil(q*n) records by confidence, for each q.

    Shapes: correct, confidence (R, n) -> (R, len(qs)). Ties in confidence keep record order.
    """
    correct = np.atleast_2d(correct).astype(np.float64)
    confidence = np.atleast_2d(confidence)
    n = correct.shape[1]
    if n == 0:
        return np.full((correct.shape[0], len(qs)), np.nan)
    order = np.argsort(-confidence, axis=1, kind="stable")
    ranked_cumsum = np.cumsum(np.take_along_axis(correct, order, axis=1), axis=1)
    m = np.array([max(1, math.ceil(q * n - 1e-9)) for q in qs])
    return ranked_cumsum[:, m - 1] / m[None, :]


def _side_accuracies(tc, tconf, rc, rconf, qs):
    return topq_accuracy(tc, tconf, qs), topq_accuracy(rc, rconf, qs)


def _population(sides_arrays, qs):
    """Mean over sides of target and reference top-q accuracy; each input row is one draw."""
    per_side = [_side_accuracies(*s, qs) for s in sides_arrays]
    return np.mean([t for t, _ in per_side], axis=0), np.mean([r for _, r in per_side], axis=0)


def _arrays(side: Side):
    return (
        side.target_correct[None, :],
        side.target_confidence[None, :],
        side.reference_correct[None, :],
        side.reference_confidence[None, :],
    )


def _resampled(side: Side, idx: np.ndarray):
    return (
        side.target_correct[idx],
        side.target_confidence[idx],
        side.reference_correct[idx],
        side.reference_confidence[idx],
    )


def _swapped(side: Side, swap: np.ndarray):
    tc = np.where(swap, side.reference_correct[None, :], side.target_correct[None, :])
    tconf = np.where(swap, side.reference_confidence[None, :], side.target_confidence[None, :])
    rc = np.where(swap, side.target_correct[None, :], side.reference_correct[None, :])
    rconf = np.where(swap, side.target_confidence[None, :], side.reference_confidence[None, :])
    return tc, tconf, rc, rconf


def quadrant_fractions(sides_arrays) -> np.ndarray:
    """(R, 4) fractions memorized, correlated, forgotten, misclassified; mean over sides."""
    per_side = []
    for tc, _, rc, _ in sides_arrays:
        tc = tc.astype(bool)
        rc = rc.astype(bool)
        per_side.append(
            np.stack([(tc & ~rc).mean(1), (tc & rc).mean(1), (~tc & rc).mean(1), (~tc & ~rc).mean(1)], axis=1)
        )
    return np.mean(per_side, axis=0)


def dejavu_test(
    sides: Sequence[Side],
    qs: Sequence[float],
    bootstrap: int,
    permutations: int,
    level: float,
    seed: int,
) -> dict:
    """Target/reference accuracy and gap at each q, quadrants, with intervals and p-values.

    Returns plain data: every estimate as {"value", "ci": [lo, hi]}, gaps also with "p_value".
    """
    sides = [s for s in sides if len(s) > 0]
    if not sides:
        raise ValueError("dejavu_test needs at least one non-empty side")
    rng = np.random.default_rng(seed)
    observed = [_arrays(s) for s in sides]
    tgt, ref = _population(observed, qs)
    boot = [_resampled(s, stats.bootstrap_indices(len(s), bootstrap, rng)) for s in sides]
    b_tgt, b_ref = _population(boot, qs)
    null = [_swapped(s, stats.swap_masks(len(s), permutations, rng)) for s in sides]
    n_tgt, n_ref = _population(null, qs)
    gap = tgt[0] - ref[0]
    p_values = stats.permutation_p_value(gap, n_tgt - n_ref)

    def est(value, samples):
        lo, hi = stats.percentile_interval(samples, level)
        return [{"value": float(v), "ci": [float(a), float(b)]} for v, a, b in zip(value, lo, hi)]

    t_est, r_est, g_est = est(tgt[0], b_tgt), est(ref[0], b_ref), est(gap, b_tgt - b_ref)
    for g, p in zip(g_est, p_values):
        g["p_value"] = float(p)
    quad = quadrant_fractions(observed)[0]
    quad_est = est(quad, quadrant_fractions(boot))
    return {
        "n": [len(s) for s in sides],
        "by_q": [
            {"q": float(q), "target": t, "reference": r, "gap": g} for q, t, r, g in zip(qs, t_est, r_est, g_est)
        ],
        "quadrants": dict(zip(QUADRANTS, quad_est)),
    }


def accuracy_curve(sides: Sequence[Side], points: int) -> dict:
    """Target and reference accuracy over q in (0, 1] (no intervals: the plot's line)."""
    qs = np.linspace(1.0 / points, 1.0, points)
    tgt, ref = _population([_arrays(s) for s in sides if len(s)], qs)
    return {"q": qs.tolist(), "target": tgt[0].tolist(), "reference": ref[0].tolist()}


def most_memorized(sides: Sequence[Side], limit: int) -> list[dict]:
    """Memorized records (target right, reference wrong), by confidence(target) - confidence(reference)."""
    rows = []
    for side_index, s in enumerate(sides):
        mask = s.target_correct.astype(bool) & ~s.reference_correct.astype(bool)
        score = s.target_confidence - s.reference_confidence
        for i in np.flatnonzero(mask):
            rows.append({"id": str(s.ids[i]), "side": side_index, "score": float(score[i])})
    rows.sort(key=lambda r: (-r["score"], r["id"]))
    return rows[:limit]
