"""Record ids to row numbers without a per-record Python dictionary.

The measure stage maps every neighbour id of every query to the public record it names (its
label or objects) and every query id to its ground truth. A dict over tens of millions of ids
costs about 100 bytes per entry in Python objects; ``IdIndex`` keeps the ids as one sorted
fixed-width bytes array and answers a batch of lookups with a vectorised binary search, about
the ids' own bytes plus 8 per record.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _as_bytes(ids: Sequence) -> np.ndarray:
    return np.asarray([str(i).encode() for i in ids], dtype=bytes)


class IdIndex:
    """Row numbers of ids, in the order the ids were given (batches concatenated)."""

    def __init__(self, id_batches: Iterable[Sequence]):
        parts = [_as_bytes(b) for b in id_batches]
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype="S1")
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, ids: Sequence) -> np.ndarray:
        """(n,) int64 row number of each id; -1 for ids not indexed (and for None)."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not len(self.keys) or not len(ids):
            return out
        present = np.fromiter((i is not None for i in ids), bool, len(ids))
        q = _as_bytes([i for i in ids if i is not None])
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[pos] == q
        found = np.full(len(q), -1, dtype=np.int64)
        found[hit] = self.order[pos[hit]]
        out[present] = found
        return out
