"""The VLM déjà vu maths (Jayaraman et al., NeurIPS 2024; docs/concepts/vlm-dejavu.md) with its statistics.

A record's caption retrieves its k nearest public images; their objects vote, a prediction rule
turns the votes into a predicted object set, and the set is scored against the record's ground
truth. Object sets are sparse rows of object ids (``object_sets``: the votes, the prediction
rules, the per-record scores). This module owns the caption-name filter, the population test
(PPG, PRG, AUCG with intervals and p-values), the sample-level gaps and the most-memorized list.

Sides follow ``metrics.Side``: side "a" holds model A's training records (A target, B
reference), side "b" model B's with the roles swapped; population numbers are the mean over sides.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from study.core import stats
from study.core.object_sets import f_score

# Elements per (draws, n) chunk of bootstrap counts or swap signs: 2**22 float64 is 32 MiB.
_CHUNK_ELEMENTS = 1 << 22
# Caption tokens: runs of letters, digits and '-'; whitespace, '_' and other punctuation split.
_TOKEN = re.compile(r"(?:[^\W_]|-)+")


def _tokens(text: str) -> list[str]:
    # '-' inside a word belongs to it ("three-1"); at a word's edge it is a dash.
    return [t for t in (m.strip("-") for m in _TOKEN.findall(text.lower())) if t]


def named_objects(caption: str, objects: Sequence[str]) -> list[str]:
    """The objects (in the given order) whose name occurs in the caption as a whole word.

    Case-insensitive; words split on whitespace and punctuation other than '-'. A name of several
    words ("traffic light") must occur as consecutive caption words.
    """
    words = _tokens(caption)
    grams: dict[int, set[str]] = {}
    named = []
    for name in objects:
        parts = _tokens(name)
        if not parts:
            continue
        if len(parts) not in grams:
            grams[len(parts)] = {" ".join(words[i : i + len(parts)]) for i in range(len(words) - len(parts) + 1)}
        if " ".join(parts) in grams[len(parts)]:
            named.append(name)
    return named


@dataclass(frozen=True)
class ObjectSide:
    """Per-record scores on one side: (n,) arrays aligned by record."""

    ids: np.ndarray
    target_precision: np.ndarray
    target_recall: np.ndarray
    target_hits: np.ndarray
    reference_precision: np.ndarray
    reference_recall: np.ndarray
    reference_hits: np.ndarray

    def __post_init__(self):
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"ObjectSide arrays differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.ids)


def recall_curve(recall: np.ndarray, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(x, fraction of records with recall >= x) on x = linspace(0, 1, bins + 1); recall (n,)."""
    grid = np.linspace(0.0, 1.0, bins + 1)
    ones = np.searchsorted(grid, recall, side="right")  # grid points at or below each recall
    at_least = len(recall) - np.cumsum(np.bincount(ones, minlength=bins + 2))[: bins + 1]
    return grid, at_least / max(len(recall), 1)


def recall_area(recall: np.ndarray, bins: int = 100) -> np.ndarray:
    """Each record's share of the AUC: the trapezoid area of its indicator [recall >= x] on the grid.

    The AUC of the recall curve is linear in records, so AUC = mean(recall_area(recall)); this is
    what lets the bootstrap and swap test run as matrix products. recall (n,) -> (n,).
    """
    grid = np.linspace(0.0, 1.0, bins + 1)
    indicators = np.arange(bins + 1)[None, :] < np.arange(bins + 2)[:, None]  # row c: c leading ones
    table = np.trapezoid(indicators.astype(np.float64), grid, axis=1)
    return table[np.searchsorted(grid, recall, side="right")]


# Columns of the per-record value matrix; the first three are gaps, which a swap negates.
_COLUMNS = ("ppg", "prg", "aucg", "p_target", "p_reference", "r_target", "r_reference", "auc_target", "auc_reference")
_GAPS = 3


def side_values(side: ObjectSide, bins: int) -> np.ndarray:
    """(n, 9) per-record values whose column means are the side's statistics (see _COLUMNS)."""
    pt, pr = side.target_precision.astype(np.float64), side.reference_precision.astype(np.float64)
    rt, rr = side.target_recall.astype(np.float64), side.reference_recall.astype(np.float64)
    at, ar = recall_area(rt, bins), recall_area(rr, bins)
    return np.stack([np.sign(pt - pr), np.sign(rt - rr), at - ar, pt, pr, rt, rr, at, ar], axis=1)


def _chunks(draws: range, n: int):
    """Consecutive sub-ranges of ``draws`` of at most _CHUNK_ELEMENTS (draws x n) elements each."""
    for start, stop in stats.draw_chunks(len(draws), n, _CHUNK_ELEMENTS):
        yield draws[start:stop]


def bootstrap_means(values: np.ndarray, side: int, seed: int, draws: range) -> np.ndarray:
    """(len(draws), m) column means of values (n, m) over bootstrap resamples of its rows.

    Draw d resamples with its own generator, keyed (seed, bootstrap, side, d): any split of the
    draws (chunks here, tasks in the measure stage) gives the same rows.
    """
    n = len(values)
    out = np.empty((len(draws), values.shape[1]))
    row = 0
    for chunk in _chunks(draws, n):
        counts = np.empty((len(chunk), n))
        for j, d in enumerate(chunk):
            counts[j] = np.bincount(stats.resample_indices(n, stats.draw_rng(seed, stats.BOOTSTRAP, side, d)), minlength=n)
        # One (1, n) @ (n, m) product per draw: its rounding cannot depend on the chunk's size.
        out[row : row + len(chunk)] = (counts[:, None, :] @ values)[:, 0] / n
        row += len(chunk)
    return out


def swap_means(gaps: np.ndarray, side: int, seed: int, draws: range) -> np.ndarray:
    """(len(draws), m) column means of gaps (n, m) under random target/reference swaps.

    Swapping a record's target and reference negates its sign(P_t - P_r), sign(R_t - R_r) and
    area difference, so each swap draw is a sign flip of the record's row; draw d's flips come
    from its own generator, keyed (seed, swap, side, d).
    """
    n = len(gaps)
    out = np.empty((len(draws), gaps.shape[1]))
    row = 0
    for chunk in _chunks(draws, n):
        signs = np.empty((len(chunk), n))
        for j, d in enumerate(chunk):
            signs[j] = np.where(stats.swap_mask(n, stats.draw_rng(seed, stats.SWAP, side, d)), -1.0, 1.0)
        out[row : row + len(chunk)] = (signs[:, None, :] @ gaps)[:, 0] / n
        row += len(chunk)
    return out


@dataclass(frozen=True)
class SideDraws:
    """What the population test needs of one non-empty side: its observed column means (9,),
    its recall curves (bins + 1,) and its bootstrap (B, 9) and swap (P, 3) draws. Aggregates
    only: a side's draws may be computed in pieces anywhere and stacked (``stack``)."""

    n: int
    observed: np.ndarray
    target_curve: np.ndarray
    reference_curve: np.ndarray
    boot: np.ndarray
    null: np.ndarray

    @staticmethod
    def stack(pieces: Sequence["SideDraws"]) -> "SideDraws":
        """One side's draws from pieces over consecutive draw ranges (in draw order)."""
        first = pieces[0]
        return SideDraws(first.n, first.observed, first.target_curve, first.reference_curve,
                         np.concatenate([p.boot for p in pieces]), np.concatenate([p.null for p in pieces]))


def side_draws(side: ObjectSide, index: int, seed: int, boot: range, swaps: range, bins: int = 100) -> SideDraws:
    """The population test's aggregates of one non-empty side (its ``index`` among the test's
    sides keys its draws) over the given bootstrap and swap draws."""
    values = side_values(side, bins)
    return SideDraws(
        n=len(side),
        observed=values.mean(axis=0),
        target_curve=recall_curve(side.target_recall, bins)[1],
        reference_curve=recall_curve(side.reference_recall, bins)[1],
        boot=bootstrap_means(values, index, seed, boot),
        null=swap_means(values[:, :_GAPS], index, seed, swaps),
    )


def population_summary(n: Sequence[int], present: Sequence[SideDraws], permutations: int, level: float,
                       bins: int = 100) -> dict:
    """PPG, PRG and AUCG with intervals and p-values, mean P and R, the curve: each statistic
    averaged over the non-empty sides ``present``; ``n`` lists every side's size."""
    observed = np.mean([s.observed for s in present], axis=0)  # (9,)
    boot = np.mean([s.boot for s in present], axis=0)  # (bootstrap, 9)
    null = np.mean([s.null for s in present], axis=0)  # (permutations, 3)
    p_values = stats.permutation_p_value(observed[:_GAPS], null)
    lo, hi = stats.percentile_interval(boot, level)
    est = {c: {"value": float(observed[j]), "ci": [float(lo[j]), float(hi[j])]} for j, c in enumerate(_COLUMNS)}
    for j, c in enumerate(_COLUMNS[:_GAPS]):
        est[c]["p_value"], est[c]["permutations"] = float(p_values[j]), int(permutations)
    return {
        "n": [int(k) for k in n],
        "ppg": est["ppg"],
        "prg": est["prg"],
        "aucg": est["aucg"],
        "precision": {"target": est["p_target"], "reference": est["p_reference"]},
        "recall": {"target": est["r_target"], "reference": est["r_reference"]},
        "auc": {"target": est["auc_target"], "reference": est["auc_reference"]},
        "curve": {
            "x": np.linspace(0.0, 1.0, bins + 1).tolist(),
            "target": np.mean([s.target_curve for s in present], axis=0).tolist(),
            "reference": np.mean([s.reference_curve for s in present], axis=0).tolist(),
        },
    }


def population_test(
    sides: Sequence[ObjectSide],
    bootstrap: int,
    permutations: int,
    level: float,
    seed: int,
    bins: int = 100,
) -> dict:
    """PPG, PRG and AUCG with bootstrap intervals and swap-test p-values; mean P and R; the curve.

    Each statistic is computed per side and averaged over the non-empty sides; a side's draws are
    keyed by its index in ``sides``. Returns plain data: estimates as {"value", "ci": [lo, hi]},
    gaps also with "p_value" and "permutations"; "n" lists every side given.
    """
    if bootstrap < 1 or permutations < 1:
        raise ValueError(f"need bootstrap >= 1 and permutations >= 1, got {bootstrap}, {permutations}")
    present = [side_draws(s, k, seed, range(bootstrap), range(permutations), bins) for k, s in enumerate(sides) if len(s)]
    if not present:
        raise ValueError("population_test needs at least one non-empty side")
    return population_summary([len(s) for s in sides], present, permutations, level, bins)


def _pooled(sides: Sequence[ObjectSide]):
    """All records of all sides, side after side: hits gap (n,), side index (n,), ids by position.

    Records rank by hits gap descending, then id, then side (``stats.top_by_score``); only the
    records that can make a cut are turned into id text.
    """
    side_index = np.concatenate([np.full(len(s), i) for i, s in enumerate(sides)]).astype(np.int64)
    th = np.concatenate([s.target_hits for s in sides]).astype(np.int64)
    score = th - np.concatenate([s.reference_hits for s in sides]).astype(np.int64)
    return score, side_index, stats.pooled_ids([s.ids for s in sides])


_SCORES = ("target_precision", "reference_precision", "target_recall", "reference_recall")


def sample_level(sides: Sequence[ObjectSide], fractions: Sequence[float]) -> list[dict]:
    """Precision, recall and F gaps (mean target - reference) over the top fraction of records.

    Records of all sides are pooled and ranked by |GT ∩ pred_tgt| - |GT ∩ pred_ref| (descending,
    ties by id); a fraction f takes the top max(1, ceil(f * n)) records.
    """
    n = sum(len(s) for s in sides)
    if n == 0:
        raise ValueError("sample_level needs at least one record")
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {list(fractions)}")
    tops = [min(n, max(1, math.ceil(f * n - 1e-9))) for f in fractions]  # tolerance: 0.1 * 30 is 3, not 4
    score, _, ids_at = _pooled(sides)
    order = stats.top_by_score(score, ids_at, max(tops, default=0))  # only the records some fraction takes
    pt, pr, rt, rr = (np.concatenate([getattr(s, f) for s in sides])[order].astype(np.float64) for f in _SCORES)
    gaps = np.stack([pt - pr, rt - rr, f_score(pt, rt) - f_score(pr, rr)], axis=1)
    running = np.cumsum(gaps, axis=0)  # (top, 3): prefix sums of the ranked gaps
    rows = []
    for f, m in zip(fractions, tops):
        p_gap, r_gap, f_gap = (float(v) for v in running[m - 1] / m)
        rows.append({"fraction": float(f), "n": m, "precision_gap": p_gap, "recall_gap": r_gap, "f_gap": f_gap})
    return rows


def most_memorized(sides: Sequence[ObjectSide], limit: int) -> list[dict]:
    """Records whose target prediction hits more ground-truth objects than the reference's, by hits gap."""
    if sum(len(s) for s in sides) == 0:
        return []
    score, side_index, ids_at = _pooled(sides)
    top = stats.top_by_score(score, ids_at, limit)
    top = top[score[top] > 0]
    return [{"id": str(i), "side": int(side_index[p]), "score": float(score[p])} for p, i in zip(top, ids_at(top))]
