"""The one-model test's naive-Bayes predictor against hand-computed values on tiny count tables."""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.core.naive_bayes import TagCounts, predict


def _table():
    t = TagCounts.empty(2)
    # class 0: {red, stripes} x2, {red}; class 1: {blue, stripes}, {blue}
    t.add([["red", "stripes"], ["red", "stripes", "red"], ["red"], ["blue", "stripes"], ["blue"], ["red"]],
          [0, 0, 0, 1, 1, -1])
    return t


def test_counts_once_per_record_and_skip_unlabelled():
    t = _table()
    got = {tag: list(t.counts[i]) for tag, i in t.vocab.items()}
    assert got == {"red": [3, 0], "stripes": [2, 1], "blue": [0, 2]}
    assert list(t.class_counts) == [3, 2]


def test_scores_are_the_smoothed_count_ratio_products():
    t = _table()
    pred, conf = predict(t, [["stripes"], ["red", "stripes"], ["blue", "stripes"], ["green"], []], alpha=1.0)
    # stripes: class 0 (2+1)/(3+2) = 3/5, class 1 (1+1)/(3+2) = 2/5 -> class 0, confidence 0.6
    assert pred[0] == 0 and conf[0] == pytest.approx(0.6)
    # red, stripes: c0 = 4/5 * 3/5 = 12/25, c1 = 1/5 * 2/5 = 2/25 -> 12/14
    assert pred[1] == 0 and conf[1] == pytest.approx(12 / 14)
    # blue, stripes: c0 = 1/4 * 3/5, c1 = 3/4 * 2/5 -> c1 with 6/20 / (3/20 + 6/20) = 2/3
    assert pred[2] == 1 and conf[2] == pytest.approx(2 / 3)
    # no known tag: the class prior (3 and 2 public records)
    assert list(pred[3:]) == [0, 0] and list(conf[3:]) == pytest.approx([0.6, 0.6])


def test_smoothing_keeps_an_unseen_pair_from_zeroing_a_class():
    t = _table()
    _, conf = predict(t, [["red", "blue"]], alpha=0.5)
    c0 = (3.5 / 4.0) * (0.5 / 3.0)
    c1 = (0.5 / 4.0) * (2.5 / 3.0)
    assert conf[0] == pytest.approx(max(c0, c1) / (c0 + c1))
    assert math.isfinite(conf[0]) and 0.5 < conf[0] < 1


def test_batches_add_up_to_one_table():
    rng = np.random.default_rng(0)
    tags = [[f"t{j}" for j in rng.choice(6, 2, replace=False)] for _ in range(40)]
    labels = rng.integers(0, 3, 40)
    whole, parts = TagCounts.empty(3), TagCounts.empty(3)
    whole.add(tags, labels)
    parts.add(tags[:17], labels[:17])
    parts.add(tags[17:], labels[17:])
    for tag, i in whole.vocab.items():
        assert list(parts.counts[parts.vocab[tag]]) == list(whole.counts[i])


def test_the_published_scores_worked_by_hand(tmp_path):
    from study.core.naive_bayes import published_scores
    from study.kinds.ssl_dejavu.outcomes import Outcomes, write_predicted

    table = TagCounts.empty(2)
    table.add([["a", "b"], ["a"], ["b"]], [0, 0, 1])  # a: class 0 twice; b: class 0 once, class 1 once
    got = published_scores(table, [["a", "b"], ["z"], [], ["a"]])
    # {a, b}: class 0 (2/2)(1/2) = 0.5, class 1 (1e-10/2)(1/2) = 2.5e-11; {z}, a tag no public record
    # had: 1 for both; no tags: 0; {a}: 1 and 5e-11.
    np.testing.assert_allclose(got, [[0.5, 2.5e-11], [1.0, 1.0], [0.0, 0.0], [1.0, 5e-11]], rtol=1e-12)
    # The published confidence, the top class's score, ranks the records; ties in a row go to the
    # lower label, a record without tags predicts nothing (never right).
    write_predicted(str(tmp_path / "nb"), np.array(["r0", "r1", "r2", "r3"]), np.array([0, 1, 0, 0]), got,
                    got.max(axis=1))
    out = Outcomes.read(str(tmp_path / "nb"))
    np.testing.assert_allclose(out.confidence, [0.5, 1.0, 0.0, 1.0])
    assert out.top1.tolist() == [True, False, False, True]
