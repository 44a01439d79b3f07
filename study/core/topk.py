"""Top-k merging and k-NN label votes (docs/concepts/ssl-dejavu.md): arrays in, arrays out.

Names follow FAISS: D (nq, k) distances ascending, I (nq, k) int64 ids, -1 for "no neighbour".
The merge is written here rather than taken from ``faiss.ResultHeap`` so that the same pure
function serves local blocks and remote shard actors and runs without FAISS; tests check it
against ``faiss.ResultHeap`` and against brute force.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (D_s, I_s), each (nq, k_s), into the global top-k.

    Ties in distance are broken by id so the result does not depend on shard order.
    Missing neighbours (I = -1) sort last and are padded with D = inf.
    """
    if not parts:
        raise ValueError("merge_topk needs at least one part")
    D = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in parts], axis=1)
    I = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts], axis=1)
    D = np.where(I < 0, np.inf, D)
    # lexsort: last key is primary -> order by distance, then by id.
    order = np.lexsort((I, D), axis=1)[:, :k]
    D_out = np.take_along_axis(D, order, axis=1)
    I_out = np.take_along_axis(I, order, axis=1)
    if D_out.shape[1] < k:
        pad = k - D_out.shape[1]
        D_out = np.pad(D_out, ((0, 0), (0, pad)), constant_values=np.inf)
        I_out = np.pad(I_out, ((0, 0), (0, pad)), constant_values=-1)
    return D_out, I_out


def brute_force_knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 k-NN in numpy: the oracle for every fast path. Shapes (nq,d),(nb,d)."""
    xq = np.asarray(xq, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    d2 = (xq**2).sum(1)[:, None] + (xb**2).sum(1)[None, :] - 2.0 * xq @ xb.T
    d2 = np.maximum(d2, 0.0)
    ids = np.broadcast_to(np.arange(len(xb)), d2.shape)
    order = np.lexsort((ids, d2), axis=1)[:, :k]
    return np.take_along_axis(d2, order, axis=1).astype(np.float32), order.astype(np.int64)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; squared L2 on them ranks exactly like cosine similarity."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def label_votes(neighbor_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Count neighbour labels per query: (nq, k) ints (-1 = none) -> (nq, num_classes) counts."""
    nl = np.asarray(neighbor_labels, dtype=np.int64)
    nq = nl.shape[0]
    valid = nl >= 0
    counts = np.zeros((nq, num_classes), dtype=np.int64)
    rows = np.broadcast_to(np.arange(nq)[:, None], nl.shape)
    np.add.at(counts, (rows[valid], nl[valid]), 1)
    return counts


def predict_from_votes(counts: np.ndarray, top: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, top-``top`` labels and confidence from label counts.

    Returns pred (nq,) = most frequent label (lowest label wins ties), topn (nq, top) labels by
    count, and confidence (nq,) = minus the entropy (nats) of the normalised counts. A query with
    no labelled neighbour predicts -1 (never right) with confidence -(ln C + 1), below any
    entropy of C classes, so it ranks last.
    """
    counts = np.asarray(counts, dtype=np.float64)
    # Stable sort on -count keeps lower labels first among equal counts.
    order = np.argsort(-counts, axis=1, kind="stable")
    topn = order[:, :top]
    total = counts.sum(1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    confidence = plogp.sum(1)
    empty = total[:, 0] == 0
    confidence[empty] = -(np.log(max(counts.shape[1], 1)) + 1.0)
    pred = np.where(empty, -1, order[:, 0])
    topn = np.where(empty[:, None], -1, topn)
    return pred, topn, confidence
