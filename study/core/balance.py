"""Per-class quotas: ``n`` records of every class in each split (pure; docs/guide/inputs.md).

Meehan et al. train each SSL model on a fixed number of images per class. Each record keeps its
keyed-hash draw ``u`` in [0, 1) (``core.splits.hash_unit``); within a class, the splits take turns
in a fixed order, each taking the ``n`` records with the smallest ``u`` among those it can use
(``eligible``) and that an earlier split did not take. That greedy choice is the same as a
per-record rule with one threshold per (class, split)::

    split(r) = the first split S in order with eligible_S(r) and u(r) <= t[class(r), S]

where ``t[c, S]`` is the ``u`` of the ``n_S``-th record S takes in class c (infinity when the
class has fewer eligible records: S takes them all). So the thresholds are computed once per
class (``class_thresholds``) and every stage applies ``assign_balanced`` to a batch, as it does the
fraction plan. Records no split takes stay unassigned.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

UNASSIGNED = "unassigned"


def class_thresholds(u: np.ndarray, eligible: Mapping[str, np.ndarray],
                     quotas: Mapping[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """For one class: ({split: threshold}, {split: records taken}) with splits in ``quotas``' order.

    ``u`` (n,) the class's draws; ``eligible[split]`` (n,) bool, which records the split can use."""
    taken = np.zeros(len(u), dtype=bool)
    order = np.argsort(u, kind="stable")
    thresholds, counts = {}, {}
    for split, n in quotas.items():
        free = order[(eligible[split] & ~taken)[order]]  # eligible and untaken, by increasing u
        chosen = free[:n]
        thresholds[split] = float(u[chosen[-1]]) if len(free) > n else float("inf")
        counts[split] = int(len(chosen))
        taken[chosen] = True
    return thresholds, counts


def assign_balanced(u: np.ndarray, labels: Sequence, eligible: Mapping[str, np.ndarray],
                    thresholds: Mapping[int, Mapping[str, float]], order: Sequence[str]) -> np.ndarray:
    """Split per record (object array) from the per-class thresholds; a record without a label, of a
    class the thresholds do not know, or that no split takes is ``UNASSIGNED``."""
    out = np.full(len(u), UNASSIGNED, dtype=object)
    for i, label in enumerate(labels):
        t = thresholds.get(label) if label is not None else None
        if t is None:
            continue
        for split in order:
            if eligible[split][i] and u[i] <= t[split]:
                out[i] = split
                break
    return out

def read_thresholds(manifest: dict) -> dict:
    """The per-class thresholds a split manifest records (class -> split -> threshold; inf for none)."""
    entry = manifest.get("per_class") or {}
    return {int(c): {s: (math.inf if t is None else float(t)) for s, t in ts.items()}
            for c, ts in entry.get("thresholds", {}).items()}
