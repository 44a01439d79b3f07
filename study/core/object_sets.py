"""Object sets as sparse rows: which objects each record shows, as integer ids in CSR form.

A vocabulary of C objects (a detector's over ImageNet-21K has ~21,000) and a handful of objects
per image: a (records x C) matrix would be almost all zeros, terabytes at LAION scale. Here a
record's set is its sorted, distinct object ids, ``indices[indptr[i]:indptr[i + 1]]``; votes,
predictions and overlaps work on (record, object) pairs, so memory follows the number of objects
present, never records x C. SciPy's CSR matrices would hold the sets too, but the operations
needed (counting a query's neighbours' objects, a per-row top-n with ties to the lower id, set
intersections per row) are each a sort or a bincount over pairs, written here on NumPy alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class ObjectSets:
    """n records' object sets over a vocabulary of ``vocab_size`` ids: row i is
    ``indices[indptr[i]:indptr[i + 1]]``, sorted and distinct."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    vocab_size: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def sizes(self) -> np.ndarray:
        """(n,) how many objects each record holds."""
        return np.diff(self.indptr)

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def rows_of_pairs(self) -> np.ndarray:
        """(nnz,) the record of each stored object."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.sizes())

    def take(self, rows: np.ndarray) -> "ObjectSets":
        """The sets of ``rows`` (int, in that order; a row may repeat)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, sizes = self.indptr[rows], self.sizes()[rows]
        return ObjectSets(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                          self.indices[_gather(starts, sizes)], self.vocab_size)

    def remap(self, to: np.ndarray, vocab_size: int) -> "ObjectSets":
        """The same sets over another vocabulary: object j becomes ``to[j]``. ``to`` must be
        increasing (a sub-vocabulary placed in a larger sorted one), so each row stays sorted."""
        return ObjectSets(self.indptr, np.asarray(to, dtype=np.int64)[self.indices], vocab_size)

    @classmethod
    def concat(cls, parts: Sequence["ObjectSets"], vocab_size: int) -> "ObjectSets":
        """The rows of ``parts`` one after the other (all over the same vocabulary)."""
        if not parts:
            return cls(np.zeros(1, np.int64), np.zeros(0, np.int64), vocab_size)
        sizes = np.concatenate([p.sizes() for p in parts])
        return cls(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   np.concatenate([p.indices[p.indptr[0] : p.indptr[-1]] for p in parts]).astype(np.int64), vocab_size)

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]], vocab_size: int) -> "ObjectSets":
        """From each record's object ids (any order, repeats allowed)."""
        sets = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows]
        return cls.from_pairs(np.repeat(np.arange(len(sets)), [len(s) for s in sets]),
                              np.concatenate(sets) if sets else np.zeros(0, np.int64), len(sets), vocab_size)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, objects: np.ndarray, n: int, vocab_size: int) -> "ObjectSets":
        """From (record, object) pairs in any order, repeats allowed."""
        rows, objects = np.asarray(rows, dtype=np.int64), np.asarray(objects, dtype=np.int64)
        if objects.size and (objects.min() < 0 or objects.max() >= vocab_size):
            raise ValueError(f"object ids must lie in [0, {vocab_size})")
        keys = np.unique(rows * max(vocab_size, 1) + objects)
        rows, objects = np.divmod(keys, max(vocab_size, 1))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
        return cls(indptr, objects, vocab_size)

    def to_dense(self) -> np.ndarray:
        """(n, C) bool; for tests and small inputs only."""
        out = np.zeros((len(self), self.vocab_size), dtype=bool)
        out[self.rows_of_pairs(), self.indices] = True
        return out


def _gather(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Positions start, start + 1, ..., start + size - 1 of each (start, size), concatenated."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    firsts = np.cumsum(sizes) - sizes  # where each run begins in the output
    return np.repeat(starts - firsts, sizes) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class Votes:
    """How many of each query's first k neighbours hold each object, for the objects with a vote:
    (query, object, count) triples sorted by query, then object."""

    query: np.ndarray  # (m,) int64
    object: np.ndarray  # (m,) int64
    count: np.ndarray  # (m,) int64
    n_queries: int
    vocab_size: int


def neighbour_votes(public: ObjectSets, I: np.ndarray, k: int) -> Votes:
    """Votes of each query's first k neighbours (I (nq, K) int rows of ``public``, nearest first,
    -1 for no neighbour). Requires 1 <= k <= K."""
    I = np.asarray(I)
    if I.ndim != 2:
        raise ValueError(f"need I (nq, K), got shape {I.shape}")
    if not 1 <= k <= I.shape[1]:
        raise ValueError(f"k={k} outside [1, {I.shape[1]}] (the search returned K={I.shape[1]} neighbours)")
    if I.size and I.max() >= len(public):
        raise ValueError(f"neighbour index {I.max()} out of range for {len(public)} public images")
    first = I[:, :k].astype(np.int64).ravel()
    queries = np.repeat(np.arange(len(I), dtype=np.int64), k)
    found = first >= 0
    rows, queries = first[found], queries[found]
    sizes = public.sizes()[rows]
    objects = public.indices[_gather(public.indptr[rows], sizes)]
    width = max(public.vocab_size, 1)
    keys, counts = np.unique(np.repeat(queries, sizes) * width + objects, return_counts=True)
    query, obj = np.divmod(keys, width)
    return Votes(query, obj, counts.astype(np.int64), len(I), public.vocab_size)


def predict_union(votes: Votes, n: int = 0) -> ObjectSets:
    """Every object some neighbour holds (the reference code's rule); ``n`` is not used."""
    return _sets(votes, np.ones(len(votes.query), dtype=bool))


def predict_top_n(votes: Votes, n: int) -> ObjectSets:
    """The n most-voted objects per query, ties to the lower object id (only objects with votes)."""
    if n < 1:
        raise ValueError(f"top-n needs n >= 1, got {n}")
    order = np.lexsort((votes.object, -votes.count, votes.query))  # per query: most votes, then lower id
    q = votes.query[order]
    starts = np.searchsorted(q, q, side="left")  # the first position of each entry's query
    keep = np.zeros(len(order), dtype=bool)
    keep[order[np.arange(len(order)) - starts < n]] = True
    return _sets(votes, keep)


def _sets(votes: Votes, keep: np.ndarray) -> ObjectSets:
    # votes are sorted by (query, object), so the kept pairs are already CSR-ordered
    counts = np.bincount(votes.query[keep], minlength=votes.n_queries)
    return ObjectSets(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), votes.object[keep],
                      votes.vocab_size)


# Each rule: (votes, n) -> predicted sets; n is ignored by rules without a size.
PREDICTION_RULES = {"union": predict_union, "top_n": predict_top_n}


def f_score(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.divide(2.0 * precision * recall, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def overlap(gt: ObjectSets, pred: ObjectSets) -> dict:
    """Per-record hits |GT ∩ pred|, |pred|, |GT|, precision, recall and F, each (n,).

    Precision is 0 where pred is empty; F is 0 where P + R = 0. Every gt row must be non-empty
    (records without objects are skipped and counted before scoring).
    """
    if len(gt) != len(pred) or gt.vocab_size != pred.vocab_size:
        raise ValueError(f"gt and pred must hold the same records over one vocabulary, got {len(gt)} records of "
                         f"{gt.vocab_size} objects and {len(pred)} of {pred.vocab_size}")
    gt_size, pred_size = gt.sizes(), pred.sizes()
    if np.any(gt_size == 0):
        raise ValueError(f"{int((gt_size == 0).sum())} record(s) have no ground-truth objects")
    width = max(gt.vocab_size, 1)
    pred_rows = pred.rows_of_pairs()
    found = np.isin(pred_rows * width + pred.indices, gt.rows_of_pairs() * width + gt.indices, assume_unique=True)
    return scores(np.bincount(pred_rows[found], minlength=len(gt)), pred_size, gt_size)


def scores(hits: np.ndarray, pred_size: np.ndarray, gt_size: np.ndarray) -> dict:
    """Per-record hits, |pred|, |GT|, precision, recall and F from the three counts, each (n,):
    what ``overlap`` gives, from counts stored per record (precision 0 where pred is empty)."""
    hits, pred_size, gt_size = (np.asarray(a, dtype=np.int64) for a in (hits, pred_size, gt_size))
    precision = np.divide(hits, pred_size, out=np.zeros(len(hits)), where=pred_size > 0)
    recall = hits / gt_size
    return {"hits": hits, "pred_size": pred_size, "gt_size": gt_size, "precision": precision, "recall": recall,
            "f": f_score(precision, recall)}
