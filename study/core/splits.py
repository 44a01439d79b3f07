"""Keyed-hash split planning and verification (DESIGN §3).

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


def split_digest(members: Mapping[str, Sequence[str]], seed: int) -> str:
    """Content digest of a plan: independent of id order, changes if any id moves split."""
    h = hashlib.sha256(f"seed={seed}".encode())
    for name in sorted(members):
        h.update(f"|{name}:".encode())
        for i in sorted(members[name]):
            h.update(str(i).encode() + b"\x00")
    return h.hexdigest()


def find_overlaps(members: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], list[str]]:
    """Pairs of splits that share ids, with (up to 5) example ids each; empty when disjoint."""
    names = sorted(members)
    sets = {n: set(members[n]) for n in names}
    overlaps: dict[tuple[str, str], list[str]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sets[a] & sets[b]
            if common:
                overlaps[(a, b)] = sorted(common)[:5]
    return overlaps


def find_duplicate_ids(ids: Sequence[str]) -> list[str]:
    """Ids that occur more than once (up to 5 examples): a plan over them cannot be disjoint."""
    values, counts = np.unique(np.asarray(ids, dtype=object).astype(str), return_counts=True)
    return [str(v) for v in values[counts > 1][:5]]
