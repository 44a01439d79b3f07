"""IVF-PQ parameters from the FAISS guidelines, and recall against exact search (pure maths).

The FAISS wiki page "Guidelines to choose an index" gives the rules used here:

* ``nlist`` (inverted lists, the coarse k-means centroids): between 4·sqrt(N) and 16·sqrt(N).
  The low end is taken: it is the cheapest to train and to assign vectors to on CPUs, and a
  query scans the same share of the codes for a given nprobe / nlist.
* training points: 30·nlist to 256·nlist (FAISS itself warns below 39 per centroid, and the
  product quantizer wants 39·256 points per sub-quantizer); 64·nlist is used. The PQ codebooks
  take 64 points per code (``PQ_MAX_TRAIN_PER_CODE``, 16384 points) of them: k-means runs once per
  sub-quantizer, and FAISS's default of 256 per code makes 64-byte codes train 4x longer.
* code size ``m`` (bytes per vector, ``PQm`` with 8-bit codes): the memory knob. Codes beyond
  64 bytes are where the wiki points to scalar quantizers instead, and GPU IVF-PQ supports
  only some sizes, so ``m`` is the largest of ``PQ_CODE_SIZES`` that divides d, leaves at least
  two dimensions per sub-quantizer and fits the memory budget.
* ``nprobe`` has no formula in the wiki: it trades speed for accuracy and is set by measuring
  (FAISS's auto-tuning). Here: the smallest power of two on ``nprobe_ladder`` whose recall@k
  on a sample of queries reaches a target (``pick_nprobe``).

Names follow FAISS: nb database vectors, d dimension, I (nq, k) ids with -1 for none.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

NBITS = 8  # bits per sub-quantizer code: 256 centroids each
ID_BYTES = 8  # FAISS stores an int64 id beside every code in the inverted lists
PQ_CODE_SIZES = (64, 56, 48, 40, 32, 28, 24, 20, 16, 12, 8, 4, 2, 1)  # bytes; all GPU-supported
MIN_POINTS_PER_CENTROID = 39  # below this FAISS's k-means warns
TRAIN_POINTS_PER_CENTROID = 64  # within the wiki's 30..256
PQ_MIN_TRAIN = MIN_POINTS_PER_CENTROID * (1 << NBITS)
PQ_MAX_TRAIN_PER_CODE = 64
NPROBE_START = 8


def choose_nlist(nb: int) -> int:
    """4·sqrt(nb), but at most nb / 39 so every centroid gets FAISS's minimum training points."""
    if nb < 1:
        raise ValueError("nb must be >= 1")
    return max(1, min(int(round(4 * math.sqrt(nb))), nb // MIN_POINTS_PER_CENTROID))


def training_size(nb: int, nlist: int) -> int:
    """Training sample size: 64·nlist, at least enough for the PQ codebooks, at most nb."""
    return int(min(nb, max(TRAIN_POINTS_PER_CENTROID * nlist, PQ_MIN_TRAIN)))


def code_size_candidates(d: int) -> list[int]:
    """Code sizes (bytes) that divide d with at least two dimensions per sub-quantizer, largest first."""
    out = [m for m in PQ_CODE_SIZES if d % m == 0 and d // m >= 2]
    return out or [1]


def ivfpq_vector_bytes(m: int) -> int:
    """Bytes one vector takes in the inverted lists: its code and its id."""
    return m + ID_BYTES


def choose_code_size(d: int, nb: int, budget_bytes: float) -> int:
    """The largest code size whose nb codes and ids fit ``budget_bytes``; the smallest if none does."""
    candidates = code_size_candidates(d)
    for m in candidates:
        if nb * ivfpq_vector_bytes(m) <= budget_bytes:
            return m
    return candidates[-1]


def nprobe_ladder(nlist: int, start: int = NPROBE_START) -> list[int]:
    """nprobe values to try, cheapest first: powers of two from ``start``, ending with nlist."""
    out, p = [], max(1, min(start, nlist))
    while p < nlist:
        out.append(p)
        p *= 2
    return out + [nlist]


def pick_nprobe(recalls: Mapping[int, float], target: float) -> int:
    """The smallest nprobe whose recall reaches ``target``; the best one when none does."""
    reaching = [p for p, r in recalls.items() if r >= target]
    if reaching:
        return min(reaching)
    return max(recalls, key=lambda p: (recalls[p], -p))


def recall_at_k(I: np.ndarray, I_exact: np.ndarray, k: int) -> np.ndarray:
    """Per query: the share of its exact top-k ids found in the approximate top-k. (nq,) floats.

    Shapes (nq, >=k) each; -1 marks "no neighbour" and is not counted (a database smaller than k
    has fewer true neighbours).
    """
    I, E = np.asarray(I, dtype=np.int64)[:, :k], np.asarray(I_exact, dtype=np.int64)[:, :k]
    if I.shape[0] != E.shape[0]:
        raise ValueError(f"recall_at_k: {I.shape[0]} approximate rows vs {E.shape[0]} exact rows")
    if E.size == 0:
        return np.ones(len(E))
    # One key per (row, id), rows in disjoint ranges: a single isin, O(nq·k) memory at any k.
    span = int(max(E.max(), I.max(initial=-1))) + 2
    rows = np.arange(len(E), dtype=np.int64)[:, None] * span
    found = np.isin(E + 1 + rows, I + 1 + rows) & (E >= 0)
    valid = (E >= 0).sum(axis=1)
    return np.divide(found.sum(axis=1), valid, out=np.ones(len(E)), where=valid > 0)
