"""Record ids to row numbers without a per-record Python dictionary.

The measure stage maps every neighbour id of every query to the public record it names (its
label or objects) and every query id to its ground truth. A dict over tens of millions of ids
costs about 100 bytes per entry in Python objects; ``IdIndex`` keeps the ids as one sorted
fixed-width bytes array and answers a batch of lookups with a vectorised binary search, about
the ids' own bytes plus 8 per record. Ids given as an Arrow string array (a column of record
shards or search results) become that bytes array straight from Arrow's buffers, with no Python
string per id: the scoring tasks look up k neighbour ids a query this way.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _arrow_bytes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) fixed-width bytes of an Arrow string array's UTF-8 values (nulls as b""), built from its
    offsets and data buffers: each id's bytes land in one row of an (n, width) block."""
    arr = pc.fill_null(ids, "").cast(pa.large_binary())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        return np.zeros(0, dtype="S1")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    block = np.zeros((len(arr), width), dtype=np.uint8)
    block[np.arange(width)[None, :] < lengths[:, None]] = data[offsets[0] : offsets[-1]]  # row-major: ids in order
    return block.view(f"S{width}").ravel()


def _as_bytes(ids) -> np.ndarray:
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return _arrow_bytes(ids)
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

    def rows(self, ids) -> np.ndarray:
        """(n,) int64 row number of each id (a sequence or an Arrow string array); -1 for ids not
        indexed (and for None / null)."""
        present, q = keys_of(ids)
        out = np.full(len(ids), -1, dtype=np.int64)
        out[present] = self.rows_of_keys(q)
        return out

    def rows_of_keys(self, q: np.ndarray) -> np.ndarray:
        """(m,) int64 row of each id given as bytes (``keys_of``); -1 for ids not indexed."""
        found = np.full(len(q), -1, dtype=np.int64)
        if not len(self.keys) or not len(q):
            return found
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[pos] == q
        found[hit] = self.order[pos[hit]]
        return found


def keys_of(ids) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bool: which ids are given (not None / null); the given ones as fixed-width bytes, in
    order: what ``IdIndex.rows_of_keys`` looks up."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        valid = pc.is_valid(ids)
        return valid.to_numpy(zero_copy_only=False), _arrow_bytes(ids.filter(valid))
    present = np.fromiter((i is not None for i in ids), bool, len(ids))
    return present, _as_bytes([i for i in ids if i is not None])
