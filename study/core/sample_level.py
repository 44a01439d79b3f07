"""The VLM test's sample level (docs/concepts/vlm-dejavu.md): the attacked records ranked by how
likely they are memorized, and the precision, recall and F gaps (target - reference) over the top
fraction of them, also over records held in id-range blocks (a distributed top-k).

A ranking (``RANKINGS``) gives each record a score, higher first, ties by id, then side:

* ``max_pred_gap``: |GT ∩ pred_tgt| - |GT ∩ pred_ref|, the ground-truth objects the target
  recovers beyond the reference;
* ``crct_pred``: |GT ∩ pred_tgt|, the ground-truth objects the target recovers;
* ``min_dist``: minus the distance of the target's nearest public neighbour (nearest first).

``SampleLevel`` holds the other choices: how many records a fraction takes (``max(1, ceil(f n))``,
or the published ``max(1, int(f n))``), which records are ranked (both sides pooled, or the
target side alone as published: side "a", model A's training records with A as the target) and
how F is formed (per record, then averaged; or published, from the mean precision and mean
recall of the records taken).

In blocks: each block's histogram of scores (``score_counts``; for a ranking with few ties only
over the records that can make the largest cut below the whole) gives each fraction's cut
(``sample_cuts``), each block sums its part of the cuts (``block_takes``, ``sample_sums``) and the
sums add (``sample_rows``); ``sample_level`` does it all for records in one block.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from study.core import stats
from study.core.accuracy_draws import TOP_SIZES
from study.core.object_sets import f_score


def _nearest(side) -> np.ndarray:
    if side.target_nearest is None or np.isnan(side.target_nearest).any():
        raise ValueError("the min_dist ranking needs every record's nearest-neighbour distance (ObjectSide.target_nearest)")
    return -np.asarray(side.target_nearest, dtype=np.float64)


RANKINGS: dict[str, Callable] = {
    "max_pred_gap": lambda s: s.target_hits.astype(np.int64) - s.reference_hits.astype(np.int64),
    "crct_pred": lambda s: s.target_hits.astype(np.int64),
    "min_dist": _nearest,
}
F_RULES = ("per_record", "from_means")
SIDES = ("both", "target")
FULL = -np.inf  # the threshold of a cut that takes every record


@dataclass(frozen=True)
class SampleLevel:
    """What the sample level reports: its fractions (sized by ``size``: ceil or floor, as
    ``accuracy_draws.TOP_SIZES``), rankings, ranked sides and F rule."""

    fractions: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    rankings: tuple[str, ...] = ("max_pred_gap",)
    size: str = "ceil"
    sides: str = "both"
    f_rule: str = "per_record"

    def __post_init__(self):
        if any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 1], got {list(self.fractions)}")
        for value, allowed, what in ((self.size, tuple(TOP_SIZES), "size"), (self.sides, SIDES, "sides"),
                                     (self.f_rule, F_RULES, "f_rule")):
            if value not in allowed:
                raise ValueError(f"unknown sample-level {what} {value!r}; expected one of {list(allowed)}")
        unknown = [r for r in self.rankings if r not in RANKINGS]
        if unknown or not self.rankings:
            raise ValueError(f"unknown sample-level ranking(s) {unknown}; expected some of {list(RANKINGS)}")

    def tops(self, n: int) -> list[int]:
        """The records each fraction takes of n."""
        return [min(n, TOP_SIZES[self.size](f, n)) for f in self.fractions]

    def ranked(self, sides: Sequence) -> Sequence:
        """The sides whose records are ranked: all, or the target side (the first) alone."""
        return sides[:1] if self.sides == "target" else sides

    def limit(self, n_at_most: int) -> int:
        """How many of a block's records can make a cut below the whole when the study ranks at
        most ``n_at_most`` records (0: every cut takes the whole)."""
        below = [m for m in self.tops(n_at_most) if m < n_at_most]
        return max(below) if below else 0


def _f(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def _pooled(sides: Sequence, ranking: str) -> tuple[np.ndarray, Callable]:
    if not sides:
        return np.zeros(0), stats.pooled_ids([])
    return np.concatenate([RANKINGS[ranking](s) for s in sides]), stats.pooled_ids([s.ids for s in sides])


def score_counts(sides: Sequence, ranking: str, limit: int | None = None) -> dict:
    """{score: records} of the pooled sides, a block's histogram (the blocks' counts add). With
    ``limit``, only the scores of the block's top ``limit`` records (ties at the last included):
    enough for every cut of at most ``limit`` records, whatever the other blocks hold."""
    score, _ = _pooled(sides, ranking)
    if limit is not None:
        if limit <= 0 or not len(score):
            return {}
        if limit < len(score):
            score = score[score >= np.partition(score, len(score) - limit)[len(score) - limit]]
    values, counts = np.unique(score, return_counts=True)
    return {v.item(): int(c) for v, c in zip(values, counts)}


def sample_cuts(counts: dict, n: int, plan: SampleLevel) -> list[tuple[int, float, int]]:
    """(m, t, above) per fraction of n ranked records from the blocks' added histogram: the top m
    are the ``above`` records scoring > t and the first m - above of those at t (by id, then
    side); a cut of every record is (n, FULL, n)."""
    if n == 0:
        raise ValueError("sample_level needs at least one record")
    cuts = []
    for m in plan.tops(n):
        if m == n:
            cuts.append((n, FULL, n))
            continue
        above = 0
        for t in sorted(counts, reverse=True):
            if above + counts[t] >= m:
                break
            above += counts[t]
        else:
            raise ValueError(f"the blocks' histograms hold {above} records, fewer than a cut of {m}")
        cuts.append((m, t, above))
    return cuts


def block_takes(block_counts: Sequence[dict], cuts: Sequence[tuple]) -> list[list[tuple]]:
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


_SCORES = ("target_precision", "reference_precision", "target_recall", "reference_recall")


def sample_sums(sides: Sequence, ranking: str, takes: Sequence[tuple]) -> np.ndarray:
    """(cuts, 6) sums over one block's records in each cut (those scoring > t and the first
    ``take`` at t, in rank order) of the target and reference precision, the target and reference
    recall, and the target and reference per-record F."""
    score, ids_at = _pooled(sides, ranking)
    lengths = [int((score > t).sum()) + take for t, take in takes]
    out = np.zeros((len(takes), 6))
    order = stats.top_by_score(score, ids_at, max(lengths, default=0))  # only the records some cut takes
    if not len(order):
        return out
    pt, pr, rt, rr = (np.concatenate([getattr(s, f) for s in sides])[order].astype(np.float64) for f in _SCORES)
    running = np.cumsum(np.stack([pt, pr, rt, rr, f_score(pt, rt), f_score(pr, rr)], axis=1), axis=0)
    for j, length in enumerate(lengths):
        if length:
            out[j] = running[length - 1]
    return out


def sample_rows(plan: SampleLevel, ranking: str, cuts: Sequence[tuple], block_sums: Sequence[np.ndarray]) -> list[dict]:
    """One ranking's rows from the blocks' ``sample_sums`` (in block order)."""
    total = functools.reduce(operator.add, block_sums)
    rows = []
    for f, (m, _, _), sums in zip(plan.fractions, cuts, total):
        pt, pr, rt, rr, ft, fr = sums / m
        # from_means: the published F of the mean precision and recall (its 2PR / (P + R + 1e-5)
        # without the 1e-5, which moves F by less than 1e-5 and makes it nonzero-safe only)
        f_gap = ft - fr if plan.f_rule == "per_record" else _f(pt, rt) - _f(pr, rr)
        rows.append({"ranking": ranking, "fraction": float(f), "n": m, "precision_gap": float(pt - pr),
                     "recall_gap": float(rt - rr), "f_gap": float(f_gap)})
    return rows


def sample_level(sides: Sequence, plan: SampleLevel = SampleLevel()) -> list[dict]:
    """The sample-level rows of records held in one block, ranking after ranking."""
    ranked = plan.ranked(sides)
    rows = []
    for ranking in plan.rankings:
        counts = score_counts(ranked, ranking)
        cuts = sample_cuts(counts, sum(len(s) for s in ranked), plan)
        rows += sample_rows(plan, ranking, cuts, [sample_sums(ranked, ranking, block_takes([counts], cuts)[0])])
    return rows
