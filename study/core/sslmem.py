"""SSLMem (Wang et al., ICLR 2024; docs/concepts/sslmem.md): per-record alignment scores and their statistics.

Encoder f trained on the shared set S_S and the candidates S_C, encoder g on S_S and the
independent set S_I. The alignment of an encoder h at x is the mean over n augmented views of
``||ĥ(x) − ĥ(view)||₂`` with ĥ the L2-normalised representation; the score is
``m(x) = align_g(x) − align_f(x)``: positive where f (trained on x) maps x and its views closer
together than g (which never saw x). The normalised score divides by ``align_g + align_f``: a
number in [−1, 1] that does not depend on how spread out an encoder's representations are (our
choice of normalisation, stated in the report).

Populations: the candidates' scores against the independent set's and the never-trained S_E's
(a mean difference with a bootstrap interval and a permutation p-value, and the AUC, the chance
that a random candidate outscores a random control record), and the share of candidates above a
high quantile of the control's scores (1 − quantile when nothing is memorized). Arrays in, plain
data out; no Ray, no FAISS.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from study.core import stats

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def alignment(x: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Mean L2 distance between each record's normalised representation and its views'.

    x (n, d), views (v, n, d) -> (n,) float64, each in [0, 2].
    """
    x = np.asarray(x, dtype=np.float64)
    views = np.asarray(views, dtype=np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    vn = views / np.maximum(np.linalg.norm(views, axis=-1, keepdims=True), 1e-12)
    return np.linalg.norm(vn - xn[None], axis=-1).mean(axis=0)


def scores(align_f: np.ndarray, align_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) SSLMem scores: g's alignment minus f's, and that over their sum (0 where
    both are 0: the views are the record itself to both encoders)."""
    f, g = np.asarray(align_f, dtype=np.float64), np.asarray(align_g, dtype=np.float64)
    total = f + g
    return g - f, np.divide(g - f, total, out=np.zeros_like(total), where=total > 0)


def range_normalised(by_set: dict[str, np.ndarray], scored: str = "candidates") -> dict[str, np.ndarray]:
    """The published normalisation (the SSLMem authors' code): every raw score divided by the range
    (max - min) of the ``scored`` set's raw scores, one constant for all sets, so that the sets
    stay comparable (the authors score one set at a time). With no range (one record, or all
    equal) the scores are left as they are."""
    base = by_set.get(scored, np.zeros(0))
    spread = float(base.max() - base.min()) if len(base) else 0.0
    return {name: (v / spread if spread > 0 else np.asarray(v, dtype=np.float64)) for name, v in by_set.items()}


def auc(a: np.ndarray, b: np.ndarray) -> float:
    """P(A > B) + P(A = B) / 2 for A from ``a``, B from ``b`` (the Mann–Whitney statistic over
    na·nb), by binary search in the sorted ``b``: O((na + nb) log nb)."""
    b = np.sort(b)
    below = np.searchsorted(b, a, side="left")
    ties = np.searchsorted(b, a, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(a) * len(b)))


def high_share(candidates: np.ndarray, control: np.ndarray, quantile: float) -> float:
    """Share of candidates scoring above the control's ``quantile``."""
    return float(np.mean(candidates > np.quantile(control, quantile)))


def _resample(values: np.ndarray, seed: int, side: int, draw: int) -> np.ndarray:
    return values[_indices(len(values), seed, side, draw)]


def _indices(n: int, seed: int, side: int, draw: int) -> np.ndarray:
    return stats.resample_indices(n, stats.draw_rng(seed, stats.BOOTSTRAP, side, draw))


class ResampledAuc:
    """``auc`` of resamples of ``a`` and ``b`` in linear time: ``b`` is sorted once, and each of
    ``a``'s values is placed in it once; a resample of ``b`` is then its counts in that order, and
    the number of resampled ``b`` below (and tied with) each value of ``a`` is a difference of
    their running sums. Each term and their order are ``auc``'s on the resampled arrays, so the
    result is the same number; the per-draw sort (n log n) is gone."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.order = np.argsort(b, kind="stable")
        ordered = b[self.order]
        self.left, self.right = np.searchsorted(ordered, a, side="left"), np.searchsorted(ordered, a, side="right")
        self.na, self.nb = len(a), len(b)

    def __call__(self, ia: np.ndarray, ib: np.ndarray) -> float:
        """The AUC of ``a[ia]`` against ``b[ib]``."""
        counts = np.bincount(ib, minlength=self.nb)[self.order]
        running = np.concatenate([[0], np.cumsum(counts)])
        below = running[self.left]
        per_value = below + 0.5 * (running[self.right] - below)
        return float(per_value[ia].sum() / (self.na * self.nb))


def compare_observed(candidates: np.ndarray, control: np.ndarray, quantile: float) -> tuple[float, float, float]:
    """Mean difference, AUC and share above the control's ``quantile``, as they are."""
    a, b = np.asarray(candidates, dtype=np.float64), np.asarray(control, dtype=np.float64)
    return float(a.mean() - b.mean()), auc(a, b), high_share(a, b, quantile)


def compare_draws(candidates: np.ndarray, control: np.ndarray, boot: range, swaps: range, seed: int,
                  quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap draws numbered ``boot`` ((B, 3): the three statistics of each resample) and
    the permutation draws numbered ``swaps`` ((P,): the mean difference under shuffled set
    labels). Each draw has its own keyed generator: any split of the ranges gives the same draws."""
    a, b = np.asarray(candidates, dtype=np.float64), np.asarray(control, dtype=np.float64)
    out = np.empty((len(boot), 3))
    resampled_auc = ResampledAuc(a, b) if len(boot) else None
    for row, d in enumerate(boot):
        ia, ib = _indices(len(a), seed, 0, d), _indices(len(b), seed, 1, d)
        ra, rb = a[ia], b[ib]
        out[row] = ra.mean() - rb.mean(), resampled_auc(ia, ib), high_share(ra, rb, quantile)
    pooled = np.concatenate([a, b])
    null = np.empty(len(swaps))
    for row, d in enumerate(swaps):
        order = stats.draw_rng(seed, stats.SWAP, 0, d).permutation(len(pooled))
        null[row] = pooled[order[: len(a)]].mean() - pooled[order[len(a):]].mean()
    return out, null


def compare_summary(observed: Sequence[float], boot: np.ndarray, null: np.ndarray, level: float,
                    quantile: float) -> dict:
    """The comparison from its observed statistics and all its draws (``compare_draws``)."""
    lo, hi = stats.percentile_interval(boot, level)
    p = float(stats.permutation_p_value(np.asarray([observed[0]]), null[:, None])[0])
    est = [{"value": float(v), "ci": [float(x), float(y)]} for v, x, y in zip(observed, lo, hi)]
    est[0]["p_value"], est[0]["permutations"] = p, int(len(null))
    return {"mean_difference": est[0], "auc": est[1], "high_share": {**est[2], "expected": 1.0 - quantile}}


def compare(candidates: np.ndarray, control: np.ndarray, draws: int, permutations: int, level: float,
            seed: int, quantile: float) -> dict:
    """Candidates against a control set: mean difference (interval, two-sided permutation
    p-value), AUC (interval) and the share above the control's ``quantile`` (interval; expected
    1 − quantile without memorization). Each set is resampled on its own (a two-sample bootstrap);
    the permutation test shuffles the set labels of the pooled scores."""
    boot, null = compare_draws(candidates, control, range(draws), range(permutations), seed, quantile)
    return compare_summary(compare_observed(candidates, control, quantile), boot, null, level, quantile)


def describe_draws(values: np.ndarray, draws: range, seed: int, side: int) -> np.ndarray:
    """The means of the bootstrap resamples numbered ``draws`` of one set's scores."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([_resample(v, seed, side, d).mean() for d in draws]) if len(v) else np.zeros(0)


def describe_observed(values: np.ndarray) -> dict:
    """n, mean and quantiles of one set's scores (the mean's interval comes from its draws)."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "mean": {"value": float(v.mean())},
            "quantiles": dict(zip((f"{q:g}" for q in QUANTILES), map(float, np.quantile(v, QUANTILES))))}


def describe_summary(observed: dict, means: np.ndarray, level: float) -> dict:
    if not observed["n"]:
        return observed
    lo, hi = stats.percentile_interval(means, level)
    return {**observed, "mean": {**observed["mean"], "ci": [float(lo), float(hi)]}}


def describe(values: np.ndarray, draws: int, level: float, seed: int, side: int) -> dict:
    """n, mean (bootstrap interval) and quantiles of one set's scores."""
    return describe_summary(describe_observed(values), describe_draws(values, range(draws), seed, side), level)


def histogram(by_set: dict[str, np.ndarray], bins: int) -> dict:
    """Common bin edges over every set's scores and each set's share of records per bin."""
    present = [np.asarray(v, dtype=np.float64) for v in by_set.values() if len(v)]
    if not present:
        return {"edges": [], "shares": {}}
    lo, hi = min(v.min() for v in present), max(v.max() for v in present)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
    return {"edges": edges.tolist(),
            "shares": {s: (np.histogram(v, edges)[0] / max(len(v), 1)).tolist() for s, v in by_set.items()}}


def most_memorized(ids: Sequence[str], score: np.ndarray, limit: int) -> list[int]:
    """Positions of the ``limit`` highest scores, ties by id."""
    ids = np.asarray(ids)
    return [int(p) for p in stats.top_by_score(np.asarray(score, dtype=np.float64), lambda pos: ids[pos].astype(str),
                                               limit)]
