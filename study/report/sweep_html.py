"""A sweep's settings side by side (SSL study): each headline gap with its interval per setting —
against the swept value when it is a number (training epochs), one group per setting otherwise
(methods) — and the table of every setting's headline numbers and utility."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

from study.report.pvalues import p_value
from study.report.page import png, table
from study.report.summary import one_model_headlines


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def gap_plot(sweep: dict) -> str:
    settings = sweep["settings"]
    keys = list(dict.fromkeys(k for s in settings for k in s["headline"]))
    values = [s["value"] for s in settings]
    numeric = _numeric(values)
    x = np.array(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(values) + 3), 3.6))
    width = 0 if numeric else 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        rows = [(xi, s["headline"][key]) for xi, s in zip(x, settings) if key in s["headline"]]
        xs = np.array([r[0] for r in rows]) + (j - (len(keys) - 1) / 2) * width
        gap = np.array([r[1]["gap"] for r in rows])
        err = np.array([[r[1]["gap"] - r[1]["ci"][0], r[1]["ci"][1] - r[1]["gap"]] for r in rows]).T
        style = ":" if key.endswith("/null") else "-"
        ax.errorbar(xs, gap, yerr=err, fmt="o" + (style if numeric else ""), capsize=3, label=key, color=f"C{j}")
    ax.axhline(0, color="grey", lw=0.8)
    key_name = sweep["key"]
    if numeric:
        ax.set_xlabel(key_name)
    else:
        ax.set_xticks(x, [str(v) for v in values])
        ax.set_xlabel(key_name)
    ax.set_ylabel("gap (target − reference), 95 % CI")
    ax.legend(fontsize=7)
    fig.suptitle(f"memorization gap over {key_name}")
    return png(fig)


def settings_table(sweep: dict) -> str:
    rows = []
    for s in sweep["settings"]:
        probe = (s.get("utility") or {}).get("linear_probe") or {}
        for key, v in s["headline"].items():
            rows.append(_row(s["value"], key, v, probe_cell(probe.get(key.split("/")[0], {}))))
        # The one-model test per setting: its predictor in the reference's column.
        for name, head in one_model_headlines(s).items():
            rows += [_row(s["value"], f"{key}, one-model vs {name}", v, "") for key, v in head.items()]
    return table([sweep["key"], "representation/control", "target", "reference (or predictor)", "gap [95 % CI]", "p",
                  "linear probe acc. per model"], rows)


def _row(value, key: str, v: dict, probe: str) -> list[str]:
    return [html.escape(str(value)), html.escape(key), f"{v['target']:.3f}", f"{v['reference']:.3f}",
            f"{v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]", html.escape(p_value(v)), probe]


def probe_cell(per_model: dict) -> str:
    return "<br>".join(f"{html.escape(m)} {a['value']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]"
                       for m, a in per_model.items())


def sweep_section(report: dict) -> str:
    sweep = report.get("sweep")
    if not sweep:
        return ""
    first = html.escape(str(sweep["settings"][0]["value"]))
    return (f"<h2>Sweep over {html.escape(sweep['key'])}</h2><img src=\"{gap_plot(sweep)}\">{settings_table(sweep)}"
            f"<p>Below: the numbers of the first setting ({first}).</p>")
