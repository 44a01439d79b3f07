"""The VLM déjà vu maths (Jayaraman et al., NeurIPS 2024; docs/concepts/vlm-dejavu.md) with its statistics.

A record's caption retrieves its k nearest public images; their objects vote, a prediction rule
turns the votes into a predicted object set, and the set is scored against the record's ground
truth. Object sets are boolean rows over a vocabulary of C objects. This module owns the votes,
the prediction rules, the per-record scores, the caption-name filter, the population test (PPG,
PRG, AUCG with intervals and p-values), the sample-level gaps and the most-memorized list.

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

# Elements per (draws, n) chunk of bootstrap counts or swap signs: 2**22 float64 is 32 MiB.
_CHUNK_ELEMENTS = 1 << 22
# Caption tokens: runs of letters, digits and '-'; whitespace, '_' and other punctuation split.
_TOKEN = re.compile(r"(?:[^\W_]|-)+")


def neighbour_votes(public_objects: np.ndarray, I: np.ndarray, k: int) -> np.ndarray:
    """How many of each query's first k neighbours hold each object.

    Shapes: public_objects (nb, C) bool, I (nq, K) int64 sorted nearest first with -1 for no
    neighbour -> (nq, C) int64. Requires 1 <= k <= K.
    """
    public_objects = np.asarray(public_objects, dtype=bool)
    I = np.asarray(I)
    if public_objects.ndim != 2 or I.ndim != 2:
        raise ValueError(f"need public_objects (nb, C) and I (nq, K), got {public_objects.shape}, {I.shape}")
    if not 1 <= k <= I.shape[1]:
        raise ValueError(f"k={k} outside [1, {I.shape[1]}] (the search returned K={I.shape[1]} neighbours)")
    if I.size and I.max() >= len(public_objects):
        raise ValueError(f"neighbour index {I.max()} out of range for {len(public_objects)} public images")
    votes = np.zeros((I.shape[0], public_objects.shape[1]), dtype=np.int64)
    for column in I[:, :k].T:  # one neighbour rank at a time keeps memory at (nq, C)
        found = column >= 0
        votes[found] += public_objects[column[found]]
    return votes


def predict_union(votes: np.ndarray) -> np.ndarray:
    """Every object some neighbour holds (the reference code's rule). (nq, C) -> (nq, C) bool."""
    return np.asarray(votes) > 0


def predict_top_n(votes: np.ndarray, n: int) -> np.ndarray:
    """The n most-voted objects per row, ties to the lower object index, only those with votes.

    Shapes: votes (nq, C) -> (nq, C) bool with at most n True per row.
    """
    if n < 1:
        raise ValueError(f"top-n needs n >= 1, got {n}")
    votes = np.asarray(votes)
    order = np.argsort(-votes, axis=1, kind="stable")[:, :n]  # stable: equal votes keep index order
    pred = np.zeros(votes.shape, dtype=bool)
    np.put_along_axis(pred, order, True, axis=1)
    return pred & (votes > 0)


def _union_rule(votes: np.ndarray, n: int) -> np.ndarray:
    return predict_union(votes)


# Each rule: (votes (nq, C), n) -> (nq, C) bool; n is ignored by rules without a size.
PREDICTION_RULES = {"union": _union_rule, "top_n": predict_top_n}


def _f_score(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.divide(2.0 * precision * recall, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def overlap(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Per-record hits |GT ∩ pred|, precision, recall and F; gt (n, C), pred (n, C) bool -> (n,) each.

    Precision is 0 where pred is empty; F is 0 where P + R = 0. Every gt row must be non-empty
    (records without objects are skipped and counted before scoring).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be equal (n, C) matrices, got {gt.shape} and {pred.shape}")
    gt_size = gt.sum(axis=1)
    if np.any(gt_size == 0):
        raise ValueError(f"{int((gt_size == 0).sum())} record(s) have no ground-truth objects")
    hits = (gt & pred).sum(axis=1)
    pred_size = pred.sum(axis=1)
    precision = np.divide(hits, pred_size, out=np.zeros(len(hits)), where=pred_size > 0)
    recall = hits / gt_size
    return {"hits": hits, "precision": precision, "recall": recall, "f": _f_score(precision, recall)}


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


def _record_values(side: ObjectSide, bins: int) -> np.ndarray:
    """(n, 9) per-record values whose column means are the side's statistics (see _COLUMNS)."""
    pt, pr = side.target_precision.astype(np.float64), side.reference_precision.astype(np.float64)
    rt, rr = side.target_recall.astype(np.float64), side.reference_recall.astype(np.float64)
    at, ar = recall_area(rt, bins), recall_area(rr, bins)
    return np.stack([np.sign(pt - pr), np.sign(rt - rr), at - ar, pt, pr, rt, rr, at, ar], axis=1)


def _chunks(n: int, draws: int):
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, draws, step):
        yield start, min(step, draws - start)


def _bootstrap_means(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, m) column means of values (n, m) over resamples of its rows (counts @ values)."""
    n = len(values)
    out = np.empty((draws, values.shape[1]))
    for start, size in _chunks(n, draws):
        idx = stats.bootstrap_indices(n, size, rng)  # (size, n)
        flat = (idx + n * np.arange(size)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n)
        # One (1, n) @ (n, m) product per draw: its rounding cannot depend on the chunk's size.
        out[start : start + size] = (counts[:, None, :] @ values)[:, 0] / n
    return out


def _swap_means(gaps: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, m) column means of gaps (n, m) under random target/reference swaps.

    Swapping a record's target and reference negates its sign(P_t - P_r), sign(R_t - R_r) and
    area difference, so each swap draw is a sign flip of the record's row.
    """
    n = len(gaps)
    out = np.empty((draws, gaps.shape[1]))
    for start, size in _chunks(n, draws):
        signs = np.where(stats.swap_masks(n, size, rng), -1.0, 1.0)  # (size, n)
        out[start : start + size] = (signs[:, None, :] @ gaps)[:, 0] / n
    return out


def population_test(
    sides: Sequence[ObjectSide],
    bootstrap: int,
    permutations: int,
    level: float,
    seed: int,
    bins: int = 100,
) -> dict:
    """PPG, PRG and AUCG with bootstrap intervals and swap-test p-values; mean P and R; the curve.

    Each statistic is computed per side and averaged over the non-empty sides. Returns plain data:
    estimates as {"value", "ci": [lo, hi]}, gaps also with "p_value" and "permutations"; "n" lists every side given.
    """
    if bootstrap < 1 or permutations < 1:
        raise ValueError(f"need bootstrap >= 1 and permutations >= 1, got {bootstrap}, {permutations}")
    present = [s for s in sides if len(s) > 0]
    if not present:
        raise ValueError("population_test needs at least one non-empty side")
    rng = np.random.default_rng(seed)
    values = [_record_values(s, bins) for s in present]
    observed = np.mean([v.mean(axis=0) for v in values], axis=0)  # (9,)
    boot = np.mean([_bootstrap_means(v, bootstrap, rng) for v in values], axis=0)  # (bootstrap, 9)
    null = np.mean([_swap_means(v[:, :_GAPS], permutations, rng) for v in values], axis=0)
    p_values = stats.permutation_p_value(observed[:_GAPS], null)
    lo, hi = stats.percentile_interval(boot, level)
    est = {c: {"value": float(observed[j]), "ci": [float(lo[j]), float(hi[j])]} for j, c in enumerate(_COLUMNS)}
    for j, c in enumerate(_COLUMNS[:_GAPS]):
        est[c]["p_value"], est[c]["permutations"] = float(p_values[j]), int(permutations)
    target_curve = np.mean([recall_curve(s.target_recall, bins)[1] for s in present], axis=0)
    reference_curve = np.mean([recall_curve(s.reference_recall, bins)[1] for s in present], axis=0)
    return {
        "n": [len(s) for s in sides],
        "ppg": est["ppg"],
        "prg": est["prg"],
        "aucg": est["aucg"],
        "precision": {"target": est["p_target"], "reference": est["p_reference"]},
        "recall": {"target": est["r_target"], "reference": est["r_reference"]},
        "auc": {"target": est["auc_target"], "reference": est["auc_reference"]},
        "curve": {
            "x": np.linspace(0.0, 1.0, bins + 1).tolist(),
            "target": target_curve.tolist(),
            "reference": reference_curve.tolist(),
        },
    }


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
    gaps = np.stack([pt - pr, rt - rr, _f_score(pt, rt) - _f_score(pr, rr)], axis=1)
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
