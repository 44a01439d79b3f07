"""Property tests (hypothesis) that the published statistics mean what they say, on synthetic
per-record outcomes with a known true gap: the bootstrap interval of the SSL gap and of the VLM
PPG covers the true value about 95 % of the time (neither less nor always) with about the width
normal theory gives, and the paired test's size under a true gap of 0 is not above 0.05. Each
property draws R datasets per example and judges the count with an exact binomial bound, so a
broken interval or test fails, not a noisy one.

Power, from the binomial distribution of the count at R = 600 (one-sided 99 % bounds): a coverage
test passes an interval of true coverage 0.86 with probability 0.009 (0.89: 0.43) and fails one of
0.93 with probability 0.0004; a size test passes a test of true size 0.10 with probability 0.010
(0.08: 0.25) and fails one of size 0.05 with probability 0.008. An interval that always covers
(such as [-1, 1]) fails the upper coverage bound, and one of the wrong width the width check."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from study.core import stats
from study.core.metrics import Side, dejavu_test
from study.core.object_draws import population_test
from study.core.objects import ObjectSide

R = 600  # datasets per example (cheap: a few ms each); the power above is for this R
# The percentile bootstrap under-covers a little at these sizes (n >= 80, p away from 0 and 1):
# coverage is judged against 0.95 minus this slack.
SLACK = 0.03
# Two parameter points per property (fixed: derandomized); the power above holds at each, and each
# costs R statistics of the product (~25 s of the unit tier's budget per four).
PROPERTY = settings(max_examples=2, deadline=None, derandomize=True)


def _side(rng, n: int, p_t: float, p_r: float) -> Side:
    ids = np.array([f"r{i}" for i in range(n)])
    return Side(ids, rng.random(n) < p_t, -rng.random(n), rng.random(n) < p_r, -rng.random(n))


def _not_below(covered: int, target: float) -> bool:
    """Coverage count not significantly below ``target`` (exact one-sided 99 % upper bound)."""
    return stats.binomial_interval(covered, R, 0.98)[1] >= target


def _not_always(covered: int, most: float = 0.985) -> bool:
    """Coverage count not significantly above ``most`` (an interval that always covers is too wide)."""
    return stats.binomial_interval(covered, R, 0.98)[0] <= most


def _width_as_theory(widths: list[float], sd: float, n: int) -> bool:
    """Mean interval width within 20 % of the normal-theory width 2 * 1.96 * sd / sqrt(n)."""
    theory = 2 * 1.959964 * sd / np.sqrt(n)
    return 0.8 <= float(np.mean(widths)) / theory <= 1.2


def _not_above(rejected: int, alpha: float) -> bool:
    """Rejection count not significantly above ``alpha`` (exact one-sided 99 % lower bound)."""
    return stats.binomial_interval(rejected, R, 0.98)[0] <= alpha


@PROPERTY
@given(p_t=st.floats(0.2, 0.8), p_r=st.floats(0.2, 0.8), n=st.integers(80, 200))
def test_ssl_gap_interval_covers_the_true_gap(p_t, p_r, n):
    rng = np.random.default_rng(int(n + 1000 * p_t + 10**6 * p_r))
    covered, widths = 0, []
    for r in range(R):
        gap = dejavu_test([_side(rng, n, p_t, p_r)], [1.0], bootstrap=200, permutations=10, level=0.95,
                          seed=r)["by_q"][0]["gap"]
        covered += gap["ci"][0] <= p_t - p_r <= gap["ci"][1]
        widths.append(gap["ci"][1] - gap["ci"][0])
    assert _not_below(covered, 0.95 - SLACK) and _not_always(covered), (covered, R)
    # A record's gap is the difference of two independent Bernoulli outcomes.
    assert _width_as_theory(widths, np.sqrt(p_t * (1 - p_t) + p_r * (1 - p_r)), n), (np.mean(widths), n)


@PROPERTY
@given(p=st.floats(0.2, 0.8), n=st.integers(80, 200))
def test_ssl_paired_test_size_is_at_most_alpha(p, n):
    rng = np.random.default_rng(int(n + 1000 * p))
    rejected = sum(
        dejavu_test([_side(rng, n, p, p)], [1.0], bootstrap=10, permutations=200, level=0.95,
                    seed=r)["by_q"][0]["gap"]["p_value"] < 0.05
        for r in range(R)
    )
    assert _not_above(rejected, 0.05), (rejected, R)


LEVELS = np.array([0.0, 0.25, 0.5, 1.0])


def _object_side(rng, n: int, w_t: np.ndarray, w_r: np.ndarray) -> ObjectSide:
    pt, pr = rng.choice(LEVELS, n, p=w_t), rng.choice(LEVELS, n, p=w_r)
    zeros = np.zeros(n)
    return ObjectSide(np.array([f"r{i}" for i in range(n)]), pt, pt, zeros, pr, pr, zeros)


def _weights(raw) -> np.ndarray:
    w = np.asarray(raw, dtype=np.float64) + 0.05
    return w / w.sum()


@PROPERTY
@given(a=st.lists(st.floats(0, 1), min_size=4, max_size=4), b=st.lists(st.floats(0, 1), min_size=4, max_size=4),
       n=st.integers(80, 200))
def test_vlm_ppg_interval_covers_the_true_ppg(a, b, n):
    w_t, w_r = _weights(a), _weights(b)
    # True PPG of independent draws: P(P_t > P_r) - P(P_t < P_r), enumerated over the levels.
    true = sum(w_t[i] * w_r[j] * np.sign(LEVELS[i] - LEVELS[j]) for i in range(4) for j in range(4))
    # A record's sign has variance P(P_t != P_r) - PPG^2.
    unequal = sum(w_t[i] * w_r[j] for i in range(4) for j in range(4) if i != j)
    rng = np.random.default_rng(n)
    covered, widths = 0, []
    for r in range(R):
        ppg = population_test([_object_side(rng, n, w_t, w_r)], bootstrap=200, permutations=10, level=0.95,
                              seed=r)["ppg"]
        covered += ppg["ci"][0] <= true <= ppg["ci"][1]
        widths.append(ppg["ci"][1] - ppg["ci"][0])
    assert _not_below(covered, 0.95 - SLACK) and _not_always(covered), (covered, R)
    assert _width_as_theory(widths, np.sqrt(unequal - true**2), n), (np.mean(widths), n)


@PROPERTY
@given(a=st.lists(st.floats(0, 1), min_size=4, max_size=4), n=st.integers(80, 200))
def test_vlm_paired_test_size_is_at_most_alpha(a, n):
    w = _weights(a)  # target and reference exchangeable: the same distribution, drawn independently
    rng = np.random.default_rng(n + 7)
    rejected = sum(
        population_test([_object_side(rng, n, w, w)], bootstrap=10, permutations=200, level=0.95,
                        seed=r)["ppg"]["p_value"] < 0.05
        for r in range(R)
    )
    assert _not_above(rejected, 0.05), (rejected, R)
