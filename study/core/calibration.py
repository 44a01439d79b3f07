"""Calibration over repeated studies: the same setting trained with R seeds (``repeats: R``).

A per-record bootstrap interval and a paired test are conditional on the two trained models: they
say how much the number would move with other records, not with other training runs. Repeating
the training with R seeds measures the rest (conditional on the split plan, which repeats share):

- the *rejection rate* of each test at level alpha over the R runs, with its exact (Clopper–
  Pearson) interval: for a null control (a test named ``.../null``) it is the false-positive
  rate, which must not exceed alpha beyond that interval; otherwise the detection rate;
- the *mean over seeds* of each number, with an interval from resampling the seeds (percentile
  bootstrap over runs): it includes training randomness as well as the records' sampling;
- the spread of the number over seeds (its training standard deviation) beside the mean width of
  the per-run (records-only) intervals: how much a single run's interval leaves out.

Takes each run's headline (the numbers a study kind quotes first: an estimate with "ci" and
"p_value" and its number under the kind's ``value_key``, possibly nested one level as the VLM
kind's PPG/PRG/AUCG are, each under "value") and returns plain data.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from study.core import stats

KINDS = {
    "per_run": "records resampled (conditional on the run's trained models)",
    "over_seeds": "runs resampled (includes training randomness)",
    "rejection_rate": "exact binomial (Clopper-Pearson) interval over runs",
}


def headline_tests(headline: dict, value_key: str = "value") -> dict[str, dict]:
    """{test name: {"value", "ci", "p_value"}} from a headline (flat, each entry's number under
    ``value_key``, or nested one level, under "value")."""
    out = {}
    for key, entry in headline.items():
        if not isinstance(entry, dict):
            continue
        if "p_value" in entry:
            out[key] = {"value": float(entry[value_key]), "ci": list(entry["ci"]), "p_value": float(entry["p_value"])}
            continue
        for sub, est in entry.items():
            if isinstance(est, dict) and "p_value" in est:
                out[f"{key}/{sub}"] = {"value": float(est["value"]), "ci": list(est["ci"]), "p_value": float(est["p_value"])}
    return out


def calibrated_headline(headline: dict, one_model: dict[str, dict]) -> dict:
    """The tests a run's calibration covers: its two-model headline and each one-model test's
    (``one_model``: predictor -> its headline), named ``one-model vs <predictor>: <test>``."""
    out = dict(headline)
    for name, head in one_model.items():
        out.update({f"one-model vs {name}: {key}": entry for key, entry in head.items()})
    return out


def is_null(test: str) -> bool:
    """Whether a headline test is a null control (nothing to find: its rejections are false positives)."""
    return "null" in test.split("/")


def rejection_rate(p_values: Sequence[float], alpha: float, level: float, null: bool = False) -> dict:
    """Share of runs whose test rejects at ``alpha``, with its exact interval. For a null control
    it is the false-positive rate, and ``above_alpha`` says it is significantly above alpha (the
    test is not calibrated); otherwise it is the detection rate."""
    n, k = len(p_values), int(np.sum(np.asarray(p_values) < alpha))
    lo, hi = stats.binomial_interval(k, n, level)
    return {"value": k / n, "ci": [lo, hi], "rejections": k, "runs": n, "alpha": alpha,
            "kind": "false-positive rate" if null else "detection rate", "above_alpha": bool(null and lo > alpha)}


def over_seeds(values: Sequence[float], level: float, draws: int, seed: int) -> dict:
    """Mean over runs with a percentile interval from resampling the runs, and the runs' sd."""
    v = np.asarray(values, dtype=np.float64)
    means = np.array([v[stats.resample_indices(len(v), stats.draw_rng(seed, stats.BOOTSTRAP, 0, d))].mean()
                      for d in range(draws)])
    lo, hi = stats.percentile_interval(means, level)
    return {"value": float(v.mean()), "ci": [float(lo), float(hi)], "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def calibrate(runs: Sequence[tuple[Any, dict]], alpha: float, level: float, draws: int, seed: int,
              value_key: str = "value") -> dict:
    """Per setting value (None without a sweep), per test: rejection rate, mean over seeds,
    training sd and the per-run intervals' mean width. ``runs``: (value, headline) per run;
    ``value_key``: where a flat headline entry holds its number (``headline_tests``)."""
    groups: dict[str, tuple[Any, list[dict]]] = {}
    for value, headline in runs:
        groups.setdefault(json.dumps(value, sort_keys=True, default=str), (value, []))[1].append(headline_tests(headline, value_key))
    settings = []
    for value, tests in groups.values():
        names = [t for t in tests[0] if all(t in other for other in tests)]
        per_test = {}
        for name in names:
            rows = [t[name] for t in tests]
            values = [r["value"] for r in rows]
            per_test[name] = {
                "rejection_rate": rejection_rate([r["p_value"] for r in rows], alpha, level, is_null(name)),
                "over_seeds": over_seeds(values, level, draws, seed),
                "per_run_ci_width": float(np.mean([r["ci"][1] - r["ci"][0] for r in rows])),
                "per_run": rows,
            }
        settings.append({"value": value, "runs": len(tests), "tests": per_test})
    return {"alpha": alpha, "level": level, "interval_kinds": dict(KINDS), "settings": settings}
