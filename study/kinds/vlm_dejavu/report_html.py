"""The VLM déjà vu report's body: headline gaps, recall curves, every number, sample-level gaps,
utility, the mitigation trade-off of a sweep, and the gallery of the most-memorized records."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

from study.report.page import fmt, image_uri, png, table
from study.report.summary import one_model_headlines

GAPS = ("ppg", "prg", "aucg")


def recall_plot(results: dict, key: str) -> str:
    spaces = list(results["spaces"])
    fig, axes = plt.subplots(1, max(1, len(spaces)), figsize=(5 * max(1, len(spaces)), 3.6), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for control, style in (("positive", "-"), ("null", ":")):
            e = results["spaces"][space].get(control, {}).get(key)
            if not e:
                continue
            c = e["curve"]
            ax.plot(c["x"], c["target"], style, color="C3", label=f"target ({control})")
            ax.plot(c["x"], c["reference"], style, color="C0", label=f"reference ({control})")
        ax.set_xlabel("recall x")
        ax.set_ylabel("fraction of records with recall >= x")
        ax.set_title(f"{space}, {key}")
        if ax.get_legend_handles_labels()[0]:  # a space without this entry (no pair) has no curves
            ax.legend(fontsize=7)
    return png(fig)


def numbers_table(results: dict) -> str:
    rows = []
    for space, controls in results["spaces"].items():
        for control, entries in controls.items():
            for key, e in entries.items():
                rows.append([space, control, str(e["k"]), e["rule"], e["variant"], str(sum(e["n"])),
                             fmt(e["ppg"], True), fmt(e["prg"], True), fmt(e["aucg"], True),
                             f"{e['precision']['target']['value']:.3f} / {e['precision']['reference']['value']:.3f}",
                             f"{e['recall']['target']['value']:.3f} / {e['recall']['reference']['value']:.3f}"])
    return table(["space", "control", "k", "rule", "objects", "records", "PPG", "PRG", "AUCG",
                  "precision tgt / ref", "recall tgt / ref"], rows)


def sample_table(results: dict, key: str) -> str:
    rows = []
    for space, controls in results["spaces"].items():
        for control, entries in controls.items():
            e = entries.get(key)
            for s in (e or {}).get("sample_level", []):
                rows.append([space, control, s.get("ranking", "max_pred_gap"), f"{s['fraction']:g}", str(s["n"]),
                             f"{s['precision_gap']:+.3f}", f"{s['recall_gap']:+.3f}", f"{s['f_gap']:+.3f}"])
    return table(["space", "control", "ranking", "top fraction", "records", "precision gap", "recall gap", "F gap"], rows)


RANKED_BY = {"max_pred_gap": "the ground-truth objects the target recovers beyond the reference (max_pred_gap)",
             "crct_pred": "the ground-truth objects the target recovers (crct_pred)",
             "min_dist": "the target's nearest public neighbour, nearest first (min_dist)"}


def sample_text(how: dict) -> str:
    """How the sample level ranked and measured its records."""
    sides = ("the target side alone (model A's training records)" if how.get("sides") == "target"
             else "the records of both sides pooled")
    size = "max(1, int(f n))" if how.get("size") == "floor" else "max(1, ceil(f n))"
    f = ("F from the mean precision and the mean recall" if how.get("f") == "from_means"
         else "F per record, averaged")
    rankings = "; ".join(RANKED_BY.values())
    return (f"Records with ground truth ranked, {sides}, by a ranking ({html.escape(rankings)}; ties by id); a top "
            f"fraction f of n takes {size} records; gaps are target minus reference over them, {f}.")


def utility_text(utility: dict) -> str:
    items = [f"{k} {v:.3f}" for k, v in utility.items() if isinstance(v, float)]
    note = f" ({html.escape(utility['note'])})" if utility.get("note") else ""
    models = " and ".join(utility.get("per_model", {})) or "the models"
    return (", ".join(items) or "not measured") + note + f", mean of {models} over {utility.get('records', 0)} holdout records"


def tradeoff_plot(sweep: dict, key: str) -> str:
    """Memorization (positive control, with intervals) against zero-shot accuracy per setting."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, gap in zip(axes, GAPS):
        for s in sweep["settings"]:
            head = next((v for k, v in s["headline"].items() if "/positive/" in k), None)
            util = s.get("utility", {}).get("zero_shot", np.nan)
            if head is None:
                continue
            est = head[gap]
            ax.errorbar([util], [est["value"]], yerr=[[est["value"] - est["ci"][0]], [est["ci"][1] - est["value"]]],
                        fmt="o", capsize=3)
            ax.annotate(f"{sweep['key'].rsplit('.', 1)[-1]}={s['value']}", (util, est["value"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("zero-shot accuracy (utility)")
        ax.set_ylabel(gap.upper())
    fig.suptitle(f"memorization vs utility over {sweep['key']}")
    return png(fig)


def sweep_table(sweep: dict) -> str:
    rows = []
    for s in sweep["settings"]:
        u = s.get("utility", {})
        # The two-model headline, then the one-model test's against each retriever, per setting.
        entries = [(key, h) for key, h in s["headline"].items()]
        entries += [(f"{key}, one-model vs {name}", h) for name, head in one_model_headlines(s).items()
                    for key, h in head.items()]
        for key, h in entries:
            rows.append([html.escape(str(s["value"])), html.escape(key), fmt(h["ppg"], True), fmt(h["prg"], True),
                         fmt(h["aucg"], True), f"{u.get('zero_shot', float('nan')):.3f}",
                         f"{u.get('i2t_recall@1', float('nan')):.3f}"])
    return table([sweep["key"], "space/control/k", "PPG", "PRG", "AUCG", "zero-shot acc.", "i2t R@1"], rows)


def one_model_html(one_model: dict | None, results: dict, key: str) -> str:
    """The one-model test beside the two-model test at the headline entry, per space and control:
    each gap against model B and against the text retriever, and each reference's precision."""
    if not one_model:
        return ""
    if "predictors" not in one_model:
        return f"<h2>One-model test</h2><p>{html.escape(one_model.get('note', ''))}</p>"
    rows, memorized = [], []
    for name, spaces in one_model["predictors"].items():
        for space, controls in spaces.items():
            for control, entries in controls.items():
                one, two = entries.get(key), results["spaces"].get(space, {}).get(control, {}).get(key)
                if not one:
                    continue
                p = one["precision"]
                rows.append([html.escape(f"{space}/{control}"), html.escape(name), str(sum(one["n"])),
                             *(f"{fmt(two[g], True)}" if two else "" for g in GAPS), *(fmt(one[g], True) for g in GAPS),
                             f"{p['target']['value']:.3f} / {two['precision']['reference']['value']:.3f} / "
                             f"{p['reference']['value']:.3f}" if two else
                             f"{p['target']['value']:.3f} / &ndash; / {p['reference']['value']:.3f}"])
                top = one.get("most_memorized", [])[:10] if control == "positive" else []
                if top:
                    items = ", ".join(f"{html.escape(r['id'])} ({r['score']:+.0f})" for r in top)
                    memorized.append(f"<li>{html.escape(space)} vs. {html.escape(name)}: {items}</li>")
    head = ["space/control", "reference", "records", *(f"two-model {g.upper()}" for g in GAPS),
            *(f"one-model {g.upper()}" for g in GAPS), "precision: target / model B / one-model reference"]
    listed = (f"<p>Most memorized by the one-model test (target hits minus retriever hits), positive control:</p>"
              f"<ul>{''.join(memorized)}</ul>") if memorized else ""
    per_space = {"spaces": {f"{space} vs. {name}": controls for name, spaces in one_model["predictors"].items()
                            for space, controls in spaces.items()}}
    pc = one_model.get("public_captions") or {}
    refs = []
    if "text_retriever" in one_model["predictors"]:
        refs.append("<b>text_retriever</b>: the text tower of a CLIP model trained on the public set only embeds each "
                    "record's caption and retrieves its k nearest public captions, while the target retrieves public "
                    "images")
    if "text_model" in one_model["predictors"]:
        refs.append("<b>text_model</b> (as published): a pretrained text model (measure.text_model) retrieves each "
                    "caption's k nearest public captions, and the target retrieves them too, with its text tower "
                    "(space caption_to_caption)")
    return (f"<h2>One-model test (no reference model): {html.escape(key)}</h2><p>The reference is text only: "
            f"{'; '.join(refs)} ({pc.get('embedded', '?')} public records with a caption; skipped: "
            f"{html.escape(str(pc.get('skipped', {})))}). The objects of the retrieved records' images are the "
            f"prediction. Each model is the target on the records it trained on (model A on its own; model B on its "
            f"own when the pair exists) and the holdout halves are the null control, as in the two-model test. "
            f"Beside it, the two-model numbers.</p>" + table(head, rows) + listed
            + f'<img src="{recall_plot(per_space, key)}"><h3>Every one-model number</h3>{numbers_table(per_space)}')


def _marked(image: np.ndarray, marks: list[dict], side: int = 96) -> np.ndarray:
    """The image at ``side`` pixels on its longer side (any stored size), its marked boxes drawn."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    im = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                       Image.NEAREST if scale >= 1 else Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for b in marks:
        draw.rectangle([b["x0"] * scale - 1, b["y0"] * scale - 1, b["x1"] * scale, b["y1"] * scale],
                       outline=(255, 255, 255), width=2)
    return np.asarray(im)


def gallery_html(items: list[dict]) -> str:
    if not items:
        return "<p>No record whose caption recovers more true objects with the target than with the reference.</p>"
    rows = []
    for it in items:
        nbrs = "".join(f'<img src="{image_uri(n, 64)}">' for n in it["neighbours"])
        rows.append([
            html.escape(it["caption"]),
            f'<img src="{image_uri(_marked(it["original"], it["marks"]))}">',
            nbrs,
            f"objects {html.escape(', '.join(it['objects']))}<br>not named: {html.escape(', '.join(it['unnamed']))}"
            f"<br>recovered: <b>{html.escape(', '.join(it['recovered']) or 'none')}</b>",
            f"{html.escape(it['id'])}<br>{it['split']} split, target {it['target_model']}<br>hits gap {it['score']:+.0f}",
        ])
    return table(["caption (what the attack sees)", "image (objects not named, boxed)", "nearest public images (target)",
                  "objects", "record"], rows)


def render_body(report: dict, gallery: list[dict]) -> str:
    key = report["headline_key"]
    heads = "".join(
        f"<li><b>{html.escape(k)}</b> ({v['variant']} objects): PPG {fmt(v['ppg'], True)}; PRG {fmt(v['prg'], True)}; "
        f"AUCG {fmt(v['aucg'], True)}</li>"
        for k, v in report["headline"].items()
    )
    if not heads:
        heads = "<li>No reference model (train.pair: false): no two-model test; the one-model test is below.</li>"
    sweep = report.get("sweep")
    sweep_html = ""
    if sweep:
        sweep_html = (f"<h2>Mitigation: {html.escape(sweep['key'])}</h2><img src=\"{tradeoff_plot(sweep, key)}\">"
                      f"{sweep_table(sweep)}<p>Below: the numbers of the first setting ({html.escape(str(sweep['settings'][0]['value']))}).</p>")
    tr = report.get("text_randomization", {})
    return f"""<p>VLM déjà vu test (object recovery from a caption): each record's caption, embedded by the text tower,
retrieves its k nearest public images (image tower, {report['metric']}); their objects (union, or top-{report['top_n']} by
neighbour count) are scored against the record's objects, all of them and those the caption does not name. PPG/PRG = share of
records where the target model beats the reference on precision/recall minus the reverse; AUCG = area between the two
"fraction of records with recall &ge; x" curves. 95 % bootstrap intervals and paired-test p-values; the null control
(holdout captions neither model saw) should cover 0. k in {report['ks']}; text randomization {html.escape(str(tr))}.</p>
<ul>{heads}</ul>
<p>Utility: {utility_text(report.get('utility', {}))}.</p>
{sweep_html}
<h2>Recall curves ({key})</h2><img src="{recall_plot(report['results'], key)}">
<h2>Sample level ({key})</h2><p>{sample_text(report.get('sample_level', {}))}</p>{sample_table(report['results'], key)}
{one_model_html(report.get("one_model"), report["results"], key)}
<h2>All numbers</h2>{numbers_table(report['results'])}
<h2>Most-memorized records</h2>{gallery_html(gallery)}
<p>Records without ground truth for a variant (every object named): {html.escape(str(report.get('skipped_no_gt', {})))}.</p>
"""
