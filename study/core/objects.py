"""The VLM déjà vu maths (Jayaraman et al., NeurIPS 2024; docs/concepts/vlm-dejavu.md) with its statistics.

A record's caption retrieves its k nearest public images; their objects vote, a prediction rule
turns the votes into a predicted object set, and the set is scored against the record's ground
truth. Object sets are sparse rows of object ids (``object_sets``: the votes, the prediction
rules, the per-record scores). This module owns the caption-name filter, the recall curve, the
sample-level gaps and the most-memorized list, both also over records held in id-range blocks;
the population test (PPG, PRG, AUCG with intervals and p-values) is ``object_draws``.

Sides follow ``metrics.Side``: side "a" holds model A's training records (A target, B
reference), side "b" model B's with the roles swapped; population numbers are the mean over sides.
"""
from __future__ import annotations

import functools
import math
import operator
import re
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from study.core import stats
from study.core.object_sets import f_score

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


def recall_at_least(recall: np.ndarray, bins: int = 100) -> np.ndarray:
    """(bins + 1,) int: the records with recall >= x on x = linspace(0, 1, bins + 1); recall (n,).
    Counts, so the records of a side held in several blocks add up."""
    grid = np.linspace(0.0, 1.0, bins + 1)
    ones = np.searchsorted(grid, recall, side="right")  # grid points at or below each recall
    return len(recall) - np.cumsum(np.bincount(ones, minlength=bins + 2))[: bins + 1]


def recall_curve(recall: np.ndarray, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(x, fraction of records with recall >= x) on x = linspace(0, 1, bins + 1); recall (n,)."""
    return np.linspace(0.0, 1.0, bins + 1), recall_at_least(recall, bins) / max(len(recall), 1)


def recall_area(recall: np.ndarray, bins: int = 100) -> np.ndarray:
    """Each record's share of the AUC: the trapezoid area of its indicator [recall >= x] on the grid.

    The AUC of the recall curve is linear in records, so AUC = mean(recall_area(recall)); this is
    what lets the bootstrap and swap test run as matrix products. recall (n,) -> (n,).
    """
    grid = np.linspace(0.0, 1.0, bins + 1)
    indicators = np.arange(bins + 1)[None, :] < np.arange(bins + 2)[:, None]  # row c: c leading ones
    table = np.trapezoid(indicators.astype(np.float64), grid, axis=1)
    return table[np.searchsorted(grid, recall, side="right")]


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


def sample_tops(n: int, fractions: Sequence[float]) -> list[int]:
    """The records each fraction f takes of n: max(1, ceil(f * n))."""
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {list(fractions)}")
    return [min(n, max(1, math.ceil(f * n - 1e-9))) for f in fractions]  # tolerance: 0.1 * 30 is 3, not 4


def score_counts(sides: Sequence[ObjectSide]) -> dict[int, int]:
    """{hits gap: records} of the pooled sides: a block's histogram (the blocks' counts add)."""
    score, _, _ = _pooled(sides)
    values, counts = np.unique(score, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def sample_cuts(counts: dict[int, int], fractions: Sequence[float]) -> list[tuple[int, int, int]]:
    """(m, t, above) per fraction from the whole ranking's histogram: the top m records are the
    ``above`` records with hits gap > t and the first m - above of those at t (by id, then side)."""
    n = sum(counts.values())
    if n == 0:
        raise ValueError("sample_level needs at least one record")
    cuts = []
    for m in sample_tops(n, fractions):
        above = 0
        for t in sorted(counts, reverse=True):
            if above + counts[t] >= m:
                break
            above += counts[t]
        cuts.append((m, t, above))
    return cuts


def block_takes(block_counts: Sequence[dict[int, int]], cuts: Sequence[tuple[int, int, int]]) -> list[list[tuple[int, int]]]:
    """Per block (in id order), per cut: (t, how many of the block's records at t the cut takes).
    Ties at t go by id, then side, so the earlier blocks' ties come first."""
    takes = [[] for _ in block_counts]
    for m, t, above in cuts:
        left = m - above
        for b, counts in enumerate(block_counts):
            take = min(counts.get(t, 0), left)
            takes[b].append((t, take))
            left -= take
    return takes


def sample_sums(sides: Sequence[ObjectSide], takes: Sequence[tuple[int, int]]) -> np.ndarray:
    """(cuts, 3) sums of the precision, recall and F gaps (target - reference) over one block's
    records in each cut: those with hits gap > t and the first ``take`` at t, summed in rank order."""
    score, _, ids_at = _pooled(sides)
    lengths = [int((score > t).sum()) + take for t, take in takes]
    out = np.zeros((len(takes), 3))
    order = stats.top_by_score(score, ids_at, max(lengths, default=0))  # only the records some cut takes
    if not len(order):
        return out
    pt, pr, rt, rr = (np.concatenate([getattr(s, f) for s in sides])[order].astype(np.float64) for f in _SCORES)
    gaps = np.stack([pt - pr, rt - rr, f_score(pt, rt) - f_score(pr, rr)], axis=1)
    running = np.cumsum(gaps, axis=0)  # (top, 3): prefix sums of the ranked gaps
    for j, length in enumerate(lengths):
        if length:
            out[j] = running[length - 1]
    return out


def sample_rows(fractions: Sequence[float], cuts: Sequence[tuple[int, int, int]], block_sums: Sequence[np.ndarray]) -> list[dict]:
    """The sample-level rows from the blocks' ``sample_sums`` (in block order)."""
    total = functools.reduce(operator.add, block_sums)
    rows = []
    for f, (m, _, _), sums in zip(fractions, cuts, total):
        p_gap, r_gap, f_gap = (float(v) for v in sums / m)
        rows.append({"fraction": float(f), "n": m, "precision_gap": p_gap, "recall_gap": r_gap, "f_gap": f_gap})
    return rows


def sample_level(sides: Sequence[ObjectSide], fractions: Sequence[float]) -> list[dict]:
    """Precision, recall and F gaps (mean target - reference) over the top fraction of records.

    Records of all sides are pooled and ranked by |GT ∩ pred_tgt| - |GT ∩ pred_ref| (descending,
    ties by id, then side); a fraction f takes the top max(1, ceil(f * n)) records. The records may
    be held in id-range blocks: the histogram of hits gaps (``score_counts``, added over blocks)
    gives each fraction's cut (``sample_cuts``), each block sums its part of the cuts
    (``block_takes``, ``sample_sums``) and the sums add (``sample_rows``); here, one block.
    """
    cuts = sample_cuts(score_counts(sides), fractions)
    return sample_rows(fractions, cuts, [sample_sums(sides, block_takes([score_counts(sides)], cuts)[0])])


def most_memorized(sides: Sequence[ObjectSide], limit: int) -> list[dict]:
    """Records whose target prediction hits more ground-truth objects than the reference's, by hits gap."""
    if sum(len(s) for s in sides) == 0:
        return []
    score, side_index, ids_at = _pooled(sides)
    top = stats.top_by_score(score, ids_at, limit)
    top = top[score[top] > 0]
    return [{"id": str(i), "side": int(side_index[p]), "score": float(score[p])} for p, i in zip(top, ids_at(top))]


def merge_most_memorized(blocks: Sequence[Sequence[dict]], limit: int) -> list[dict]:
    """The most memorized of the records held in blocks: each block's ``most_memorized``, merged
    by hits gap (descending), then id, then side."""
    rows = [r for block in blocks for r in block]
    return sorted(rows, key=lambda r: (-r["score"], r["id"], r["side"]))[:limit]
