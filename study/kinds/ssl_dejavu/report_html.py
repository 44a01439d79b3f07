"""The SSL déjà vu report's body: accuracy-vs-confidence curves, quadrant bars, every number,
and the most-memorized gallery (crop, original, nearest public images)."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

from study.report.pvalues import p_is
from study.report.page import fmt, image_uri, png, table
from study.report.sweep_html import probe_cell, sweep_section


def curve_plot(results: dict) -> str:
    reps = list(results)
    fig, axes = plt.subplots(1, max(1, len(reps)), figsize=(5 * max(1, len(reps)), 3.6), squeeze=False)
    for ax, rep in zip(axes[0], reps):
        for control, style in (("positive", "-"), ("null", ":")):
            if control not in results[rep]:
                continue
            c = results[rep][control]["curve"]
            ax.plot(c["q"], c["target"], style, color="C3", label=f"target ({control})")
            ax.plot(c["q"], c["reference"], style, color="C0", label=f"reference ({control})")
        ax.set_xlabel("fraction q of records, most confident first")
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"{rep} embeddings")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
    return png(fig)


def quadrant_plot(results: dict) -> str:
    reps = list(results)
    fig, axes = plt.subplots(1, max(1, len(reps)), figsize=(5 * max(1, len(reps)), 3.2), squeeze=False)
    for ax, rep in zip(axes[0], reps):
        controls = [c for c in ("positive", "null") if c in results[rep]]
        names = list(results[rep][controls[0]]["top1"]["quadrants"]) if controls else []
        width = 0.8 / max(1, len(controls))
        for j, control in enumerate(controls):
            quad = results[rep][control]["top1"]["quadrants"]
            vals = np.array([quad[n]["value"] for n in names])
            err = np.array([[quad[n]["value"] - quad[n]["ci"][0], quad[n]["ci"][1] - quad[n]["value"]] for n in names]).T
            ax.bar(np.arange(len(names)) + j * width, vals, width, yerr=err, capsize=3, label=control)
        ax.set_xticks(np.arange(len(names)) + width * (len(controls) - 1) / 2, names, fontsize=8)
        ax.set_ylabel("fraction of records")
        ax.set_title(f"quadrants, {rep}")
        ax.legend(fontsize=7)
    return png(fig)


def results_table(results: dict) -> str:
    rows = [
        [rep, control, metric, f"{e['q']:g}", fmt(e["target"]), fmt(e["reference"]), fmt(e["gap"], True)]
        for rep, controls in results.items()
        for control, res in controls.items()
        for metric in ("top1", "top5")
        for e in res[metric]["by_q"]
    ]
    return table(["representation", "control", "metric", "q", "target", "reference", "gap"], rows)


def gallery_html(items: list[dict]) -> str:
    if not items:
        return "<p>No memorized records (target right, reference wrong) in the positive control.</p>"
    rows = []
    for it in items:
        nbrs = "".join(f'<img src="{image_uri(n, 64)}">' for n in it["neighbours"])
        rows.append([
            f'<img src="{image_uri(it["crop"])}">',
            f'<img src="{image_uri(it["original"])}">',
            nbrs,
            f"{html.escape(it['id'])}<br>{it['split']} split, target {it['target_model']}<br>score {it['score']:.3f}",
        ])
    return table(["crop (what the attack sees)", "original", "nearest public images", "record"], rows)


def utility_html(utility: dict | None) -> str:
    if not utility:
        return ""
    if "linear_probe" not in utility:
        return f"<h2>Utility</h2><p>{html.escape(utility.get('note', ''))}</p>"
    rows = [[html.escape(rep), probe_cell(per_model)] for rep, per_model in utility["linear_probe"].items()]
    r = utility["records"]
    return (f"<h2>Utility: linear probe</h2><p>A logistic regression on frozen features of {r['train']} public records, "
            f"scored on {r['test']} holdout records (95 % bootstrap intervals; chance {utility['chance']:.3f}).</p>"
            + table(["representation", "accuracy per model"], rows))


def one_model_html(one_model: dict | None, headline: dict) -> str:
    """The one-model test beside the two-model test, per representation and control: the gap
    against each predictor, and each predictor's accuracy."""
    if not one_model:
        return ""
    if "headline" not in one_model:
        return f"<h2>One-model test</h2><p>{html.escape(one_model.get('note', ''))}</p>"

    def gap(v):
        return f"{v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], {html.escape(p_is(v))}"

    names = list(one_model["headline"])
    keys = list(dict.fromkeys(k for n in names for k in one_model["headline"][n]))
    rows = []
    for key in keys:
        per = [one_model["headline"][n].get(key) for n in names]
        knn = next((v["target"] for v in per if v), None)
        rows.append([html.escape(key), gap(headline[key]) if key in headline else "",
                     *(gap(v) if v else "" for v in per), "" if knn is None else f"{knn:.3f}",
                     *(f"{v['reference']:.3f}" if v else "" for v in per)])
    head = ["representation/control", "two-model gap", *(f"gap vs. {n}" for n in names), "k-NN acc.",
            *(f"{n} acc." for n in names)]
    memorized = []
    for name, per_rep in one_model.get("predictors", {}).items():
        for rep, controls in per_rep.items():
            rows_m = (controls.get("positive") or {}).get("most_memorized", [])[:10]
            if rows_m:
                items = ", ".join(f"{html.escape(r['id'])} ({r['score']:+.2f})" for r in rows_m)
                memorized.append(f"<li>{html.escape(rep)} vs. {html.escape(name)}: {items}</li>")
    listed = (f"<p>Most memorized by the one-model test (k-NN right, predictor wrong; by confidence difference), "
              f"positive control:</p><ul>{''.join(memorized)}</ul>") if memorized else ""
    return (f"<h2>One-model test (no reference model)</h2><p>The attacked model's k-NN accuracy minus that of a "
            f"predictor that sees only the crop, learnt from the public records: naive Bayes over the crop's tags "
            f"({html.escape(str(one_model.get('tagger')))}) and, when trained, a crop classifier. Beside it, the "
            f"two-model gap.</p>" + table(head, rows) + listed)


def per_class_html(report: dict) -> str:
    """Top-1 accuracy per foreground class on the positive control (the one-model test's
    per-class breakdown): target and reference per representation, and each one-model
    predictor's accuracy on the same class."""
    names = report.get("label_names") or []
    predictors = (report.get("one_model") or {}).get("predictors", {})
    rows = []
    for rep, controls in report["results"].items():
        by_predictor = {p: {c["label"]: c for c in ((per.get(rep) or {}).get("positive") or {}).get("per_class", [])}
                        for p, per in predictors.items()}
        for c in (controls.get("positive") or {}).get("per_class", []):
            name = names[c["label"]] if c["label"] < len(names) else str(c["label"])
            rows.append([rep, html.escape(str(name)), str(c["records"]), f"{c['target']:.3f}", f"{c['reference']:.3f}",
                         f"{c['target'] - c['reference']:+.3f}",
                         *(f"{by_predictor[p][c['label']]['reference']:.3f}" if c["label"] in by_predictor[p] else ""
                           for p in predictors)])
    if not rows:
        return ""
    head = ["representation", "class", "records", "target", "reference", "gap", *(f"{p} acc." for p in predictors)]
    return (f"<h2>Per class (positive control, top-1 accuracy)</h2><details><summary>{len(rows)} rows: the target's and "
            f"the reference's k-NN accuracy on each class's records (both sides), and each one-model predictor's on the "
            f"records it scored</summary>{table(head, rows)}</details>")


def render_body(report: dict, gallery: list[dict]) -> str:
    results = report["results"]
    heads = "".join(
        f"<li><b>{html.escape(key)}</b>: gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], "
        f"{html.escape(p_is(v))} (target {v['target']:.3f}, reference {v['reference']:.3f})</li>"
        for key, v in report["headline"].items()
    )
    return f"""<p>SSL déjà vu test (label inference from a background crop), k = {report['k']}, metric {report['metric']},
crop rule {html.escape(str(report['crop_rule']))}. Gaps are target minus reference accuracy at q = 1 with 95 % bootstrap
intervals and paired-test p-values. The null control should cover 0.</p>
<ul>{heads}</ul>
{sweep_section(report)}
<h2>Accuracy vs confidence fraction</h2><img src="{curve_plot(results)}">
<h2>Quadrants</h2><img src="{quadrant_plot(results)}">
{one_model_html(report.get("one_model"), report["headline"])}
{utility_html(report.get("utility"))}
<h2>All numbers</h2>{results_table(results)}
{per_class_html(report)}
<h2>Most-memorized records</h2>{gallery_html(gallery)}
"""
