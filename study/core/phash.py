"""Perceptual hashes and near-duplicate pairs (pure; the splits stage's optional check
across splits, docs/guide/inputs.md).

``dhash``: the image in grey, shrunk by area averaging to 8 rows x 9 columns, one bit per pair of
horizontal neighbours (is the left one brighter?): 64 bits that survive re-encoding, small resizes
and mild colour changes, but not crops or flips. Two images are near-duplicates when their hashes
differ in at most ``max_distance`` bits.

Finding every pair within distance t among N hashes without comparing all N^2 pairs: cut the 64
bits into t + 1 bands; two hashes within distance t agree exactly on at least one band (pigeonhole),
so only records that share a band value are compared (``band_keys``, then ``close_pairs`` inside
each group). Written by hand: no library here does multi-index hashing over a stream.
"""
from __future__ import annotations

import numpy as np

ROWS, COLS = 8, 9
BITS = ROWS * (COLS - 1)


def _area_resize(grey: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean of each cell of a rows x cols grid laid over the image (cells of unequal size when the
    image does not divide evenly); images smaller than the grid are repeated up first."""
    h, w = grey.shape
    if h < rows or w < cols:
        grey = np.repeat(np.repeat(grey, -(-rows // h), axis=0), -(-cols // w), axis=1)
        h, w = grey.shape
    r = np.linspace(0, h, rows + 1).astype(int)
    c = np.linspace(0, w, cols + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, r[:-1], axis=0), c[:-1], axis=1)
    return sums / np.outer(np.diff(r), np.diff(c))


def dhash(image: np.ndarray) -> int:
    """(H, W, 3) uint8 -> 64-bit difference hash (an int in [0, 2^64))."""
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    small = _area_resize(grey, ROWS, COLS)
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance of uint64 arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)


def band_keys(h: int, max_distance: int) -> list[tuple[int, int]]:
    """(band index, band value) of a hash cut into ``max_distance + 1`` bands of near-equal width."""
    bands = max_distance + 1
    edges = np.linspace(0, BITS, bands + 1).astype(int)
    out = []
    for k in range(bands):
        width = int(edges[k + 1] - edges[k])
        out.append((k, (h >> (BITS - int(edges[k + 1]))) & ((1 << width) - 1)))
    return out


def close_pairs(hashes: np.ndarray, groups: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for members of one band group that are within ``max_distance``
    and belong to different ``groups`` (splits)."""
    h = np.asarray(hashes, dtype=np.uint64)
    d = hamming(h[:, None], h[None, :])
    i, j = np.nonzero(np.triu(d <= max_distance, k=1) & (groups[:, None] != groups[None, :]))
    return [(int(a), int(b), int(d[a, b])) for a, b in zip(i, j)]


def first_band(a: int, b: int, max_distance: int) -> int:
    """The first band on which two hashes agree: a pair is reported by that band's group only."""
    for (k, va), (_, vb) in zip(band_keys(a, max_distance), band_keys(b, max_distance)):
        if va == vb:
            return k
    return -1
