"""Training-time caption randomization (the VLM mitigation, docs/concepts/vlm-dejavu.md).

Works on token ids, open_clip style: each row is start-of-text, word tokens, end-of-text, zero
padding. Each maskable token is selected with probability ``p``; a mode then says what happens to
the selected tokens (``MODES``): ``mask`` replaces each by a mask token, ``shuffle`` permutes them
among their positions. Memorization needs the same caption seen the same way epoch after epoch;
randomizing it weakens the caption-to-image binding the déjà vu test reads out.

Draws are keyed per record: record i uses ``np.random.default_rng([seed, epoch, keys[i]])``, so
the result does not depend on batching, row order or sharding across workers, and each epoch
draws afresh. Pure numpy (STYLE rule 1).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def _mask(row: np.ndarray, selected: np.ndarray, rng: np.random.Generator, mask_id: int) -> None:
    row[selected] = mask_id


def _shuffle(row: np.ndarray, selected: np.ndarray, rng: np.random.Generator, mask_id: int) -> None:
    pos = np.flatnonzero(selected)
    row[pos] = row[pos[rng.permutation(len(pos))]]


# mode -> fn(row (L,) modified in place, selected (L,) bool, rng, mask_id)
MODES: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator, int], None]] = {
    "mask": _mask,
    "shuffle": _shuffle,
}


def word_positions(tokens: np.ndarray, special_ids: Iterable[int]) -> np.ndarray:
    """(n, L) bool: positions holding a word token, i.e. neither padding (0) nor a special id
    (start/end of text) -- the usual ``maskable`` argument of :func:`randomize_tokens`."""
    tokens = np.asarray(tokens)
    return (tokens != 0) & ~np.isin(tokens, list(special_ids))


def randomize_tokens(
    tokens: np.ndarray,
    p: float,
    mode: str,
    maskable: np.ndarray,
    mask_id: int,
    seed: int,
    epoch: int,
    keys: np.ndarray,
) -> np.ndarray:
    """Randomized copy of ``tokens``; the input is left untouched.

    Shapes: tokens (n, L) int, maskable (n, L) bool (positions that may change), keys (n,) int
    (stable per-record keys, e.g. the record's index in its training set; non-negative).
    Only maskable positions change; p = 0 returns an equal array.
    """
    if mode not in MODES:
        raise ValueError(f"unknown text randomization mode {mode!r}; choose one of {sorted(MODES)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    out = np.array(tokens, copy=True)
    maskable = np.asarray(maskable, dtype=bool)
    keys = np.asarray(keys)
    if out.ndim != 2 or maskable.shape != out.shape or keys.shape != (out.shape[0],):
        raise ValueError(
            f"expected tokens (n, L), maskable (n, L) and keys (n,); got {out.shape}, {maskable.shape}, {keys.shape}"
        )
    if min(seed, epoch, keys.min(initial=0)) < 0:
        raise ValueError("seed, epoch and keys must be non-negative (they seed numpy's SeedSequence)")
    if p == 0.0:
        return out
    apply = MODES[mode]
    for i in range(out.shape[0]):
        rng = np.random.default_rng([int(seed), int(epoch), int(keys[i])])
        # One uniform per position, drawn for every position: a position's draw does not depend on
        # which others are maskable, and a longer padded context only appends draws.
        selected = (rng.random(out.shape[1]) < p) & maskable[i]
        if selected.any():
            apply(out[i], selected, rng, mask_id)
    return out
