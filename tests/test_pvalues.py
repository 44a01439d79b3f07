"""A p-value at its permutation test's floor, 1 / (1 + permutations), is written as a bound with
the number of permutations; any other p-value as its number. The floors here are worked out by
hand: 2,000 permutations -> 1/2001 = 0.00049975 (below 0.001), 999 -> 1/1000 = 0.001 exactly."""
from __future__ import annotations

import numpy as np

from study.core import stats
from study.core.metrics import Side, dejavu_test
from study.report.pvalues import p_is, p_value
from study.report.summary import est


def test_floor_written_as_a_bound():
    assert p_is({"p_value": 1 / 2001, "permutations": 2000}) == "p < 0.001 (2,000 permutations)"
    assert p_value({"p_value": 1 / 2001, "permutations": 2000}) == "< 0.001"
    assert p_is({"p_value": 1 / 101, "permutations": 100}) == "p < 0.01 (100 permutations)"
    # 1/1000 is 0.001 itself: not "below" it
    assert p_is({"p_value": 0.001, "permutations": 999}) == "p ≤ 0.001 (999 permutations)"


def test_other_values_are_numbers():
    assert p_is({"p_value": 2 / 2001, "permutations": 2000}) == "p = 0.0010"  # one permutation as extreme
    assert p_is({"p_value": 0.5, "permutations": 2000}) == "p = 0.5000"
    assert p_is({"p_value": 0.04}) == "p = 0.0400"  # no permutation count: an exact or older value
    assert p_is({"p_value": 0.04}, sep="=") == "p=0.0400"


def test_a_gap_no_permutation_reaches_is_reported_at_the_floor_with_its_count():
    rng = np.random.default_rng(0)
    n = 400  # target always right, reference always wrong: no sign swap comes near the observed gap
    side = Side(ids=np.arange(n).astype(str), target_correct=np.ones(n, bool), reference_correct=np.zeros(n, bool),
                target_confidence=rng.random(n), reference_confidence=rng.random(n))
    gap = dejavu_test([side], [1.0], bootstrap=20, permutations=300, level=0.95, seed=0)["by_q"][0]["gap"]
    assert gap["permutations"] == 300 and gap["p_value"] == 1 / 301
    assert est(gap).endswith("p < 0.01 (300 permutations)")
    assert stats.permutation_p_value(np.array([1.0]), np.zeros((300, 1)))[0] == 1 / 301
