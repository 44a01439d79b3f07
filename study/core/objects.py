"""The VLM déjà vu maths (Jayaraman et al., NeurIPS 2024; docs/concepts/vlm-dejavu.md) with its statistics.

A record's caption retrieves its k nearest public images; their objects vote, a prediction rule
turns the votes into a predicted object set, and the set is scored against the record's ground
truth. Object sets are sparse rows of object ids (``object_sets``: the votes, the prediction
rules, the per-record scores). This module owns the caption-name filter, the recall curve, the
most-memorized list, also over records held in id-range blocks; the sample level is
``sample_level``, the population test (PPG, PRG, AUCG with intervals and p-values) is ``object_draws``.

Sides follow ``metrics.Side``: side "a" holds model A's training records (A target, B
reference), side "b" model B's with the roles swapped; population numbers are the mean over sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from study.core import stats

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
    target_nearest: np.ndarray | None = None  # the target's nearest neighbour's distance (sample level's min_dist)

    def __post_init__(self):
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}
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


def most_memorized(sides: Sequence[ObjectSide], limit: int) -> list[dict]:
    """Records whose target prediction hits more ground-truth objects than the reference's, by hits gap."""
    if sum(len(s) for s in sides) == 0:
        return []
    score = np.concatenate([s.target_hits.astype(np.int64) - s.reference_hits.astype(np.int64) for s in sides])
    side_index = np.concatenate([np.full(len(s), i) for i, s in enumerate(sides)]).astype(np.int64)
    ids_at = stats.pooled_ids([s.ids for s in sides])
    top = stats.top_by_score(score, ids_at, limit)  # ties by id, then side
    top = top[score[top] > 0]
    return [{"id": str(i), "side": int(side_index[p]), "score": float(score[p])} for p, i in zip(top, ids_at(top))]


def merge_most_memorized(blocks: Sequence[Sequence[dict]], limit: int) -> list[dict]:
    """The most memorized of the records held in blocks: each block's ``most_memorized``, merged
    by hits gap (descending), then id, then side."""
    rows = [r for block in blocks for r in block]
    return sorted(rows, key=lambda r: (-r["score"], r["id"], r["side"]))[:limit]
