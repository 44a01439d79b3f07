"""The VLM population test (PPG, PRG, AUCG with bootstrap intervals and swap-test p-values; mean
precision and recall; the recall curve) as sums over records, so a side may be held in blocks.

A side's statistics are column means of a per-record value matrix (``side_values``). Every draw
has its own generator (``stats.draw_rng``, keyed by the side's index and the draw's number), so the
draws may be split into ranges (tasks) and stacked (``SideDraws.stack``). A side may also be split
into blocks of consecutive records (the measure stage's id ranges): a block's bootstrap counts and
swap bits are its part of the whole side's resample and swap mask (``stats.block_counts``), so the
blocks' column sums add up to the side's (``SideDraws.add``) and the test does not depend on the
blocks, up to the rounding of the sums' order (about 1e-16 of a value). One block holding the whole
side computes exactly what the single-process test computes.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from study.core import stats
from study.core.objects import ObjectSide, recall_area, recall_at_least

# Elements per (draws, n) chunk of bootstrap counts or swap signs: 2**22 float64 is 32 MiB.
_CHUNK_ELEMENTS = 1 << 22
# Columns of the per-record value matrix; the first three are gaps, which a swap negates.
_COLUMNS = ("ppg", "prg", "aucg", "p_target", "p_reference", "r_target", "r_reference", "auc_target", "auc_reference")
_GAPS = 3


def side_values(side: ObjectSide, bins: int) -> np.ndarray:
    """(n, 9) per-record values whose column means are the side's statistics (see _COLUMNS)."""
    pt, pr = side.target_precision.astype(np.float64), side.reference_precision.astype(np.float64)
    rt, rr = side.target_recall.astype(np.float64), side.reference_recall.astype(np.float64)
    at, ar = recall_area(rt, bins), recall_area(rr, bins)
    return np.stack([np.sign(pt - pr), np.sign(rt - rr), at - ar, pt, pr, rt, rr, at, ar], axis=1)


def _chunks(draws: range, n: int):
    """Consecutive sub-ranges of ``draws`` of at most _CHUNK_ELEMENTS (draws x n) elements each."""
    for start, stop in stats.draw_chunks(len(draws), n, _CHUNK_ELEMENTS):
        yield draws[start:stop]


def _weighted_sums(matrices: Sequence[np.ndarray], draws: range, weights) -> list[np.ndarray]:
    """[(len(draws), m) sums of each matrix's (n, m) rows weighted by ``weights(d)`` (n,), per draw d]."""
    n = len(matrices[0])
    out = [np.empty((len(draws), v.shape[1])) for v in matrices]
    row = 0
    for chunk in _chunks(draws, n):
        w = np.empty((len(chunk), n))
        for j, d in enumerate(chunk):
            w[j] = weights(d)
        for v, o in zip(matrices, out):
            # One (1, n) @ (n, m) product per draw: its rounding cannot depend on the chunk's size.
            o[row : row + len(chunk)] = (w[:, None, :] @ v)[:, 0]
        row += len(chunk)
    return out


def bootstrap_sums(values: Sequence[np.ndarray], side: int, seed: int, draws: range, total: int | None = None,
                   offset: int = 0) -> list[np.ndarray]:
    """[(len(draws), m) column sums of each matrix of ``values`` over bootstrap resamples of the
    side's rows]: the matrices (n, m) hold values of the same records (one per entry of a test),
    and each draw's counts are made once for all of them.

    The records are the side's offset .. offset + n - 1 of ``total`` (all of it by default).
    Draw d resamples the whole side with its own generator, keyed (seed, bootstrap, side, d), and
    counts this block's records: any split of the draws or of the side into blocks gives the
    same resamples.
    """
    n = len(values[0])
    total = n if total is None else total
    return _weighted_sums(values, draws, lambda d: stats.block_counts(
        total, offset, n, stats.draw_rng(seed, stats.BOOTSTRAP, side, d)))


def bootstrap_means(values: np.ndarray, side: int, seed: int, draws: range) -> np.ndarray:
    """(len(draws), m) column means of values (n, m) over bootstrap resamples of its rows."""
    return bootstrap_sums([values], side, seed, draws)[0] / len(values)


def swap_sums(gaps: Sequence[np.ndarray], side: int, seed: int, draws: range, total: int | None = None,
              offset: int = 0) -> list[np.ndarray]:
    """[(len(draws), m) column sums of each matrix of ``gaps`` (n, m), the same records',
    under random target/reference swaps].

    Swapping a record's target and reference negates its sign(P_t - P_r), sign(R_t - R_r) and
    area difference, so each swap draw is a sign flip of the record's row; draw d's flips come
    from its own generator, keyed (seed, swap, side, d), over the whole side (``total`` records,
    this block's from ``offset``).
    """
    n = len(gaps[0])
    total = n if total is None else total
    return _weighted_sums(gaps, draws, lambda d: np.where(stats.block_swap_mask(
        total, offset, n, stats.draw_rng(seed, stats.SWAP, side, d)), -1.0, 1.0))


def swap_means(gaps: np.ndarray, side: int, seed: int, draws: range) -> np.ndarray:
    """(len(draws), m) column means of gaps (n, m) under random target/reference swaps."""
    return swap_sums([gaps], side, seed, draws)[0] / len(gaps)


@dataclass(frozen=True)
class SideDraws:
    """What the population test needs of one non-empty side (or block of it), as sums over its
    ``n`` records: the value columns (9,), the records at or above each recall grid point
    (bins + 1,) of either model, and the bootstrap (B, 9) and swap (P, 3) draws' column sums.
    Aggregates only: pieces over draw ranges stack (``stack``), blocks of records add (``add``)."""

    n: int
    sums: np.ndarray
    target_at_least: np.ndarray
    reference_at_least: np.ndarray
    boot: np.ndarray
    null: np.ndarray

    @staticmethod
    def stack(pieces: Sequence["SideDraws"]) -> "SideDraws":
        """One side's (or block's) draws from pieces over consecutive draw ranges (in draw order)."""
        first = pieces[0]
        return SideDraws(first.n, first.sums, first.target_at_least, first.reference_at_least,
                         np.concatenate([p.boot for p in pieces]), np.concatenate([p.null for p in pieces]))

    @staticmethod
    def add(blocks: Sequence["SideDraws"]) -> "SideDraws":
        """One side from its blocks (in block order), each over the same draws."""
        if len(blocks) == 1:
            return blocks[0]
        total = lambda f: functools.reduce(operator.add, (getattr(b, f) for b in blocks))  # noqa: E731
        return SideDraws(*(total(f) for f in ("n", "sums", "target_at_least", "reference_at_least", "boot", "null")))


def side_draws(side: ObjectSide, index: int, seed: int, boot: range, swaps: range, bins: int = 100,
               total: int | None = None, offset: int = 0) -> SideDraws:
    """The population test's sums over one non-empty side (its ``index`` among the test's sides
    keys its draws), or over the block of it that holds records offset .. of ``total``, over the
    given bootstrap and swap draws."""
    return entries_draws([side], index, seed, boot, swaps, bins, total, offset)[0]


def entries_draws(sides: Sequence[ObjectSide], index: int, seed: int, boot: range, swaps: range, bins: int = 100,
                  total: int | None = None, offset: int = 0) -> list[SideDraws]:
    """``side_draws`` of one side under several entries (the same records scored at each k and
    prediction rule): each draw's counts and swap bits are made once for every entry."""
    values = [side_values(s, bins) for s in sides]
    boots = bootstrap_sums(values, index, seed, boot, total, offset)
    nulls = swap_sums([v[:, :_GAPS] for v in values], index, seed, swaps, total, offset)
    return [SideDraws(n=len(s), sums=v.sum(axis=0), target_at_least=recall_at_least(s.target_recall, bins),
                      reference_at_least=recall_at_least(s.reference_recall, bins), boot=b, null=p)
            for s, v, b, p in zip(sides, values, boots, nulls)]


def population_summary(n: Sequence[int], present: Sequence[SideDraws], permutations: int, level: float,
                       bins: int = 100) -> dict:
    """PPG, PRG and AUCG with intervals and p-values, mean P and R, the curve: each statistic
    averaged over the non-empty sides ``present``; ``n`` lists every side's size."""
    observed = np.mean([s.sums / s.n for s in present], axis=0)  # (9,)
    boot = np.mean([s.boot / s.n for s in present], axis=0)  # (bootstrap, 9)
    null = np.mean([s.null / s.n for s in present], axis=0)  # (permutations, 3)
    p_values = stats.permutation_p_value(observed[:_GAPS], null)
    lo, hi = stats.percentile_interval(boot, level)
    est = {c: {"value": float(observed[j]), "ci": [float(lo[j]), float(hi[j])]} for j, c in enumerate(_COLUMNS)}
    for j, c in enumerate(_COLUMNS[:_GAPS]):
        est[c]["p_value"], est[c]["permutations"] = float(p_values[j]), int(permutations)
    return {
        "n": [int(k) for k in n],
        "ppg": est["ppg"],
        "prg": est["prg"],
        "aucg": est["aucg"],
        "precision": {"target": est["p_target"], "reference": est["p_reference"]},
        "recall": {"target": est["r_target"], "reference": est["r_reference"]},
        "auc": {"target": est["auc_target"], "reference": est["auc_reference"]},
        "curve": {
            "x": np.linspace(0.0, 1.0, bins + 1).tolist(),
            "target": np.mean([s.target_at_least / max(s.n, 1) for s in present], axis=0).tolist(),
            "reference": np.mean([s.reference_at_least / max(s.n, 1) for s in present], axis=0).tolist(),
        },
    }


def population_test(
    sides: Sequence[ObjectSide],
    bootstrap: int,
    permutations: int,
    level: float,
    seed: int,
    bins: int = 100,
) -> dict:
    """PPG, PRG and AUCG with bootstrap intervals and swap-test p-values; mean P and R; the curve.

    Each statistic is computed per side and averaged over the non-empty sides; a side's draws are
    keyed by its index in ``sides``. Returns plain data: estimates as {"value", "ci": [lo, hi]},
    gaps also with "p_value" and "permutations"; "n" lists every side given.
    """
    if bootstrap < 1 or permutations < 1:
        raise ValueError(f"need bootstrap >= 1 and permutations >= 1, got {bootstrap}, {permutations}")
    present = [side_draws(s, k, seed, range(bootstrap), range(permutations), bins) for k, s in enumerate(sides) if len(s)]
    if not present:
        raise ValueError("population_test needs at least one non-empty side")
    return population_summary([len(s) for s in sides], present, permutations, level, bins)
