"""Repeated training (``repeats: R``): the settings it plans, and the calibration summary it adds to
the report (rejection rates with exact intervals, means over seeds), checked against hand counts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.config_load import load_config
from study.core.calibration import calibrate, headline_tests, rejection_rate
from study.errors import ConfigError
from study.frame.kinds import get_kind
from study.frame.sweep import setting_points, settings_of
from study.report.calibration_html import calibration_lines, calibration_section


def test_repeats_without_a_sweep_are_seeds():
    cfg = load_config(None, ["repeats=3", "train.seed=5"])
    settings = settings_of(cfg)
    assert [n for n, _ in settings] == ["seed=5", "seed=6", "seed=7"]
    assert [c.train.seed for _, c in settings] == [5, 6, 7]
    assert all(c.repeats == 1 and not c.sweep for _, c in settings)


def test_repeats_with_a_sweep_make_a_grid():
    cfg = load_config(None, ["repeats=2", "sweep={train.epochs: [2, 4]}"])
    assert setting_points(dict(cfg.sweep), 2, 0) == [("epochs=2,seed=0", 2, 0), ("epochs=2,seed=1", 2, 1),
                                                      ("epochs=4,seed=0", 4, 0), ("epochs=4,seed=1", 4, 1)]
    assert [(c.train.epochs, c.train.seed) for _, c in settings_of(cfg)] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert settings_of(load_config(None)) == [("", load_config(None))]
    with pytest.raises(ConfigError, match="train.seed cannot be swept with repeats"):
        settings_of(load_config(None, ["repeats=2", "sweep={train.seed: [1, 2]}"]))
    with pytest.raises(ConfigError, match="repeats: must be a whole number >= 1"):
        load_config(None, ["repeats=0"])


def test_headline_tests_read_every_kind():
    ssl = {"projector/null": {"target": 0.5, "reference": 0.4, "gap": 0.1, "ci": [0.0, 0.2], "p_value": 0.3}}
    vlm = {"k=10": {"ppg": {"value": 0.2, "ci": [0.1, 0.3], "p_value": 0.01}, "aucg": {"value": 0.0, "ci": [0, 0],
                                                                                        "p_value": 1.0}}}
    mem = {"projector/candidates-vs-extra": {"difference": 0.05, "ci": [0.01, 0.09], "p_value": 0.02, "auc": 0.6}}
    assert headline_tests(ssl, get_kind("ssl_dejavu").value_key) == {
        "projector/null": {"value": 0.1, "ci": [0.0, 0.2], "p_value": 0.3}}
    assert set(headline_tests(vlm, get_kind("vlm_dejavu").value_key)) == {"k=10/ppg", "k=10/aucg"}
    assert headline_tests(mem, get_kind("sslmem").value_key)["projector/candidates-vs-extra"]["value"] == 0.05


def _binomial_tail(k: int, n: int, p: float, upper: bool) -> float:
    rng = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in rng)


def test_rejection_rate_counts_and_exact_interval():
    p = [0.01, 0.2, 0.04, 0.5, 0.049, 0.05, 0.9, 0.3]  # 3 below 0.05 (0.05 itself does not reject)
    r = rejection_rate(p, 0.05, 0.95)
    assert (r["rejections"], r["runs"], r["value"]) == (3, 8, 3 / 8)
    lo, hi = r["ci"]
    assert _binomial_tail(3, 8, lo, upper=True) == pytest.approx(0.025, abs=1e-6)  # Clopper-Pearson ends
    assert _binomial_tail(3, 8, hi, upper=False) == pytest.approx(0.025, abs=1e-6)
    assert r["above_alpha"] is False and r["kind"] == "detection rate"  # not a null control
    assert rejection_rate(p, 0.05, 0.95, null=True)["above_alpha"] is True  # 3 of 8 false positives: too many
    assert rejection_rate([0.5] * 20, 0.05, 0.95, null=True)["above_alpha"] is False


def test_calibrate_groups_runs_by_setting_value():
    rng = np.random.default_rng(0)
    runs = []
    for value in (1, 2):
        for _ in range(5):
            gap = value + rng.normal(0, 0.1)
            p = 0.001 if value == 2 else 0.5
            runs.append((value, {"projector/positive": {"gap": gap, "ci": [gap - 0.05, gap + 0.05], "p_value": p},
                                 "projector/null": {"gap": 0.0, "ci": [-0.1, 0.1], "p_value": p}}))
    cal = calibrate(runs, alpha=0.05, level=0.95, draws=200, seed=0, value_key="gap")
    assert [s["value"] for s in cal["settings"]] == [1, 2] and all(s["runs"] == 5 for s in cal["settings"])
    one, two = (s["tests"]["projector/positive"] for s in cal["settings"])
    assert one["rejection_rate"]["value"] == 0 and two["rejection_rate"]["value"] == 1
    gaps = [h["projector/positive"]["gap"] for v, h in runs if v == 2]
    assert two["over_seeds"]["value"] == pytest.approx(np.mean(gaps))
    assert two["over_seeds"]["sd"] == pytest.approx(np.std(gaps, ddof=1))
    assert min(gaps) <= two["over_seeds"]["ci"][0] <= np.mean(gaps) <= two["over_seeds"]["ci"][1] <= max(gaps)
    assert two["per_run_ci_width"] == pytest.approx(0.1)
    report = {"sweep": {"key": "train.epochs", "repeats": 5}, "calibration": cal}
    text = "\n".join(calibration_lines(report))
    assert "train.epochs = 2:" in text and "detection rate 5/5" in text and "false-positive rate 5/5" in text
    assert text.count("ABOVE ALPHA") == 1  # the null control of setting 2 only
    assert cal["settings"][0]["tests"]["projector/null"]["rejection_rate"]["above_alpha"] is False
    assert "Calibration over training seeds" in calibration_section(report)
    assert "repeats: R" in calibration_section({})  # without repeats: which kind the intervals are


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 30), (17, 40)])
def test_binomial_interval_ends_hold_the_tails(k, n):
    from study.core.stats import binomial_interval

    lo, hi = binomial_interval(k, n, 0.9)
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)
    if k:
        assert _binomial_tail(k, n, lo, upper=True) == pytest.approx(0.05, abs=1e-6)
    if k < n:
        assert _binomial_tail(k, n, hi, upper=False) == pytest.approx(0.05, abs=1e-6)
    assert lo <= k / n <= hi


def test_one_model_tests_are_calibrated_beside_the_two_model_ones():
    """Each run's one-model headline joins its calibration, null controls counted as false positives."""
    from study.core.calibration import calibrated_headline

    def run(p_pos: float, p_null: float) -> dict:
        est = lambda p: {"target": 0.6, "reference": 0.5, "gap": 0.1, "ci": [0.0, 0.2], "p_value": p}  # noqa: E731
        return calibrated_headline({"projector/positive": est(p_pos), "projector/null": est(0.5)},
                                   {"naive_bayes": {"projector/positive": est(p_pos), "projector/null": est(p_null)}})

    runs = [(None, run(0.01, 0.01)), (None, run(0.01, 0.6)), (None, run(0.2, 0.7))]
    tests = calibrate(runs, alpha=0.05, level=0.95, draws=50, seed=0, value_key="gap")["settings"][0]["tests"]
    assert set(tests) == {"projector/positive", "projector/null", "one-model vs naive_bayes: projector/positive",
                          "one-model vs naive_bayes: projector/null"}
    null = tests["one-model vs naive_bayes: projector/null"]["rejection_rate"]
    assert (null["rejections"], null["runs"], null["kind"]) == (1, 3, "false-positive rate")
    assert tests["one-model vs naive_bayes: projector/positive"]["rejection_rate"]["rejections"] == 2
    assert calibrated_headline({"a/null": {}}, {}) == {"a/null": {}}  # without a one-model test: unchanged
