"""The report's calibration part, shared by every study kind: which kind of interval each number
carries and, for a run with ``repeats``, each test's rejection rate over the training seeds (the
false-positive rate of a null control, the detection rate of a positive one), its mean over seeds
with an interval that includes training randomness, and the training spread beside the per-run
intervals' width. Takes plain data."""
from __future__ import annotations

import html

from study.report.page import table


def _est(v: dict) -> str:
    return f"{v['value']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"


def calibration_lines(report: dict) -> list[str]:
    """The same, as text lines for ``dejavu report``."""
    cal = report.get("calibration")
    if not cal:
        return []
    lines = [f"calibration over {report['sweep']['repeats']} training seeds per setting: rejection rate at "
             f"alpha = {cal['alpha']:g} (exact interval); mean over seeds (interval over runs), training sd:"]
    for s in cal["settings"]:
        indent = "  "
        if s["value"] is not None:
            lines.append(f"  {report['sweep']['key']} = {s['value']}:")
            indent = "    "
        for name, t in s["tests"].items():
            r = t["rejection_rate"]
            flag = "  ABOVE ALPHA: not calibrated" if r["above_alpha"] else ""
            lines.append(f"{indent}{name:<34} {r['kind']} {r['rejections']}/{r['runs']} = {r['value']:.3f} "
                         f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]{flag}  mean {_est(t['over_seeds'])}  "
                         f"sd {t['over_seeds']['sd']:.4f}  per-run CI width {t['per_run_ci_width']:.4f}")
    return lines


def calibration_section(report: dict) -> str:
    cal = report.get("calibration")
    note = ("<p>Intervals above are 95 % bootstrap intervals over records: conditional on the run's trained "
            "models, they leave out training randomness (another seed trains other models).")
    if not cal:
        return note + " A run with <code>repeats: R</code> trains each setting R times and reports intervals " \
                      "that include it, and each test's rejection rate over the runs.</p>"
    parts = [note + " The table below repeats the training with "
             f"{report['sweep']['repeats']} seeds per setting.</p>", "<h2>Calibration over training seeds</h2>",
             f"<p>Rejection rate: share of runs whose test has p &lt; {cal['alpha']:g}, with its exact "
             "(Clopper&ndash;Pearson) interval; for a null control this is the false-positive rate, flagged when "
             "significantly above alpha, otherwise the detection rate. Mean over seeds: interval from resampling the runs (includes training "
             "randomness). Training sd beside the mean width of the per-run (records-only) intervals.</p>"]
    for s in cal["settings"]:
        if s["value"] is not None:
            parts.append(f"<h3>{html.escape(report['sweep']['key'])} = {html.escape(str(s['value']))}</h3>")
        rows = []
        for name, t in s["tests"].items():
            r = t["rejection_rate"]
            rows.append([html.escape(name), f"{r['kind']} {r['rejections']}/{r['runs']} = {r['value']:.3f} "
                         f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" + (" <b>above alpha: not calibrated</b>" if r["above_alpha"] else ""),
                         _est(t["over_seeds"]), f"{t['over_seeds']['sd']:.4f}", f"{t['per_run_ci_width']:.4f}"])
        parts.append(table(["test", "rejection rate [exact CI]", "mean over seeds [CI over runs]", "training sd",
                            "per-run CI width"], rows))
    return "\n".join(parts)
