"""The SSLMem study's part of ``report.html``: score distributions of the candidates, the
independent and the extra set side by side, the candidates' tests, the share of highly memorized
candidates, a sweep table when there is one, and a gallery of the most memorized records with the
views they were scored with. Takes plain data."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

from study.report.page import fmt, image_uri, png, table

COLOURS = {"candidates": "tab:red", "independent": "tab:blue", "extra": "tab:gray"}


def distribution_plot(res: dict, title: str) -> str:
    hist = res["histogram"]
    if not hist["edges"]:
        return ""
    edges = np.asarray(hist["edges"])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, shares in hist["shares"].items():
        ax.stairs(shares, edges, label=name, color=COLOURS.get(name))
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(title)
    ax.set_ylabel("share of records")
    ax.legend(fontsize=8)
    return f'<img src="{png(fig)}">'


def sets_table(res: dict) -> str:
    rows = []
    for name, d in res["sets"].items():
        if not d["n"]:
            rows.append([name, "0", "", "", ""])
            continue
        q = d["quantiles"]
        rows.append([name, str(d["n"]), fmt(d["mean"]), f"{q['0.5']:+.4f}", f"{q['0.95']:+.4f}"])
    return table(["set", "records", "mean score [95% CI]", "median", "95th percentile"], rows)


def tests_table(res: dict) -> str:
    rows = []
    for control, t in res["tests"].items():
        share = t["high_share"]
        rows.append([f"candidates vs. {control}", fmt(t["mean_difference"], p=True), fmt(t["auc"]),
                     f"{fmt(share)} (expected {share['expected']:.2f})"])
    if not rows:
        return "<p>No control set was scored (splits.fractions.reference / holdout).</p>"
    return table(["test", "mean difference [95% CI], p", "AUC [95% CI]", "highly memorized share [95% CI]"], rows)


def sweep_table(sweep: dict | None) -> str:
    if not sweep:
        return ""
    keys = list(sweep["settings"][0]["headline"])
    rows = [[html.escape(str(s["value"]))] + [f"{s['headline'][k]['difference']:+.4f} "
                                              f"[{s['headline'][k]['ci'][0]:+.4f}, {s['headline'][k]['ci'][1]:+.4f}]"
                                              for k in keys] for s in sweep["settings"]]
    return f"<h2>Sweep over {html.escape(sweep['key'])}</h2>" + table([sweep["key"], *keys], rows)


def gallery_html(items: list[dict]) -> str:
    if not items:
        return ""
    rows = []
    for it in items:
        views = "".join(f'<img src="{image_uri(v, 64)}">' for v in it["views"])
        rows.append([f'<img src="{image_uri(it["original"])}">', views, html.escape(it["id"]),
                     f"{it['score']:+.4f} ({it['normalised']:+.3f})", f"{it['align_f']:.4f} / {it['align_g']:.4f}"])
    return (f"<h2>Most memorized candidates ({html.escape(items[0]['space'])})</h2>"
            + table(["record", "views scored", "id", "score (normalised)", "alignment f / g"], rows))


def render_body(report: dict, gallery: list[dict]) -> str:
    info = report.get("sslmem", {})
    parts = [
        "<h2>SSLMem per-record memorization</h2>",
        f"<p>Score m(x) = align_g(x) &minus; align_f(x), the mean L2 distance between a record's normalised "
        f"representation and its {info.get('views')} augmented views under g (never trained on the candidates) minus "
        f"under f (trained on them); normalised: {html.escape(str(info.get('normalisation')))}. Candidates = S_C "
        f"(target split), independent = S_I (reference split, trained on by g), extra = S_E (holdout, never "
        f"trained on). Highly memorized: above the {info.get('high_quantile')} quantile of the control's scores. "
        f"Intervals: records resampled, conditional on the two trained encoders. Every record's scores: "
        f"<code>{html.escape(str(info.get('scores')))}</code>.</p>",
    ]
    for space, res in report["results"].items():
        parts.append(f"<h3>{html.escape(space)}</h3>")
        for kind, label in (("raw", "raw score"), ("normalised", "normalised score"),
                            ("range", "score over the candidates' range (the published normalisation)")):
            if kind not in res:
                continue
            parts += [f"<h4>{label}</h4>", distribution_plot(res[kind], label), sets_table(res[kind]),
                      tests_table(res[kind])]
    parts.append(sweep_table(report.get("sweep")))
    parts.append(gallery_html(gallery))
    return "\n".join(parts)
