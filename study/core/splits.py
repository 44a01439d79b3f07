"""Keyed-hash split planning and verification (docs/concepts/index.md, splits).

A record's split depends only on its id and the seed: hash(seed, id) -> u in [0, 1), then u falls
into one of the consecutive intervals given by the split fractions. No global shuffle, so the same
plan comes out on any machine, in any order, at any scale.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence

import numpy as np

UNASSIGNED = "unassigned"


def hash_unit(ids: Iterable[str], seed: int) -> np.ndarray:
    """Map each id to a uniform float in [0, 1) with a keyed BLAKE2b hash.

    Shapes: ids (n,) -> (n,) float64. The key is the seed, so two seeds give independent plans.
    """
    key = int(seed).to_bytes(8, "little", signed=True)
    # The top 53 bits fill a double's mantissa exactly, so u < 1 always holds.
    out = [
        (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "little") >> 11) / 2.0**53
        for i in ids
    ]
    return np.asarray(out, dtype=np.float64)


def assign_splits(ids: Sequence[str], fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split name per id (object array); ids beyond the fractions' sum get ``UNASSIGNED``.

    Splits take consecutive intervals of [0, 1) in the order the mapping lists them.
    """
    u = hash_unit(ids, seed)
    out = np.full(len(u), UNASSIGNED, dtype=object)
    lo = 0.0
    for name, frac in fractions.items():
        hi = lo + float(frac)
        if frac > 0:
            out[(u >= lo) & (u < hi)] = name
        lo = hi
    return out


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def _mix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit affects every output bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def id_hash64(ids: Sequence[str]) -> np.ndarray:
    """A 64-bit content hash per id, vectorised over the batch (FNV-1a over the UTF-8 bytes, then
    SplitMix64; the length is mixed in, so trailing NUL padding cannot collide). Shapes: (n,) -> (n,)
    uint64. Not keyed and not for split assignment: it feeds the order-free manifest digest."""
    raw = np.asarray([str(i).encode() for i in ids], dtype=object)
    n = len(raw)
    if n == 0:
        return np.zeros(0, np.uint64)
    lengths = np.fromiter((len(b) for b in raw), np.int64, n)
    width = max(1, int(lengths.max()))
    grid = np.frombuffer(b"".join(b.ljust(width, b"\0") for b in raw), np.uint8).reshape(n, width)
    h = np.full(n, _FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):  # a loop over byte positions, vectorised over records
            live = lengths > j
            h[live] = (h[live] ^ grid[live, j].astype(np.uint64)) * _FNV_PRIME
        return _mix64(h ^ lengths.astype(np.uint64))


def digest_terms(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) 32-bit halves of each id's hash as int64, so that sums over any number of
    records below 2**31 are exact in an int64 aggregate; ``plan_digest`` folds the sums."""
    h = id_hash64(ids)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.int64), (h >> np.uint64(32)).astype(np.int64)


def plan_digest(seed: int, per_split: Mapping[str, tuple[int, int, int]]) -> str:
    """Order-free digest of a plan from per-split aggregates (count, sum of low halves, sum of high
    halves): the sum of the members' 64-bit hashes mod 2**64, per split. Any id that moves split,
    appears or disappears changes it; it can be computed by any partition of the records."""
    h = hashlib.sha256(f"seed={seed}".encode())
    for name in sorted(per_split):
        count, lo, hi = (int(v) for v in per_split[name])
        total = (lo + (hi << 32)) % 2**64
        h.update(f"|{name}:{count}:{total:016x}".encode())
    return h.hexdigest()


def split_digest(members: Mapping[str, Sequence[str]], seed: int) -> str:
    """``plan_digest`` of in-memory member lists (the oracle for the streamed aggregate)."""
    per_split = {}
    for name, ids in members.items():
        lo, hi = digest_terms(list(ids))
        per_split[name] = (len(lo), int(lo.sum()), int(hi.sum()))
    return plan_digest(seed, per_split)
