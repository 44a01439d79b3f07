"""``report.html``: one self-contained page (plots and images inlined as PNG data URIs)."""
from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CONTROL_TITLES = {"positive": "positive control (target vs reference splits)", "null": "null control (holdout, seen by neither)"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_uri(image: np.ndarray, size: int = 96) -> str:
    buf = io.BytesIO()
    h, w = image.shape[:2]
    scale = size / max(h, w)
    Image.fromarray(image).resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.NEAREST).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
    return _png(fig)


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
    return _png(fig)


def _fmt(est: dict, p: bool = False) -> str:
    text = f"{est['value']:.3f} [{est['ci'][0]:.3f}, {est['ci'][1]:.3f}]"
    return text + (f", p = {est['p_value']:.4f}" if p else "")


def results_table(results: dict) -> str:
    rows = []
    for rep, controls in results.items():
        for control, res in controls.items():
            for metric in ("top1", "top5"):
                for e in res[metric]["by_q"]:
                    rows.append(
                        f"<tr><td>{rep}</td><td>{control}</td><td>{metric}</td><td>{e['q']:g}</td>"
                        f"<td>{_fmt(e['target'])}</td><td>{_fmt(e['reference'])}</td><td>{_fmt(e['gap'], True)}</td></tr>"
                    )
    head = "<tr><th>representation</th><th>control</th><th>metric</th><th>q</th><th>target</th><th>reference</th><th>gap</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def gallery_html(items: list[dict]) -> str:
    if not items:
        return "<p>No memorized records (target right, reference wrong) in the positive control.</p>"
    rows = []
    for it in items:
        nbrs = "".join(f'<img src="{_image_uri(n, 64)}">' for n in it["neighbours"])
        rows.append(
            f"<tr><td><img src=\"{_image_uri(it['crop'])}\"></td><td><img src=\"{_image_uri(it['original'])}\"></td>"
            f"<td>{nbrs}</td><td>{html.escape(it['id'])}<br>{it['split']} split, target {it['target_model']}"
            f"<br>score {it['score']:.3f}</td></tr>"
        )
    head = "<tr><th>crop (what the attack sees)</th><th>original</th><th>nearest public images</th><th>record</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(report: dict, gallery: list[dict]) -> str:
    results = report["results"]
    heads = "".join(
        f"<li><b>{html.escape(key)}</b>: gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], "
        f"p = {v['p_value']:.4f} (target {v['target']:.3f}, reference {v['reference']:.3f})</li>"
        for key, v in report["headline"].items()
    )
    counts = ", ".join(f"{k} {v}" for k, v in report["splits"]["counts"].items())
    skipped = "; ".join(
        f"{s}: {c['embedded']} embedded, skipped {c['skipped'] or 'none'}" for s, c in report["crops"].get("sets", {}).items()
    )
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>déjà vu report: {html.escape(report['name'])}</title>
<style>{style}</style></head><body>
<h1>Déjà vu memorization report: {html.escape(report['name'])}</h1>
<p>SSL déjà vu test (label inference from a background crop), k = {report['k']}, metric {report['metric']},
crop rule {html.escape(str(report['crop_rule']))}. Gaps are target minus reference accuracy at q = 1 with 95 % bootstrap
intervals and paired-test p-values. The null control should cover 0.</p>
<ul>{heads}</ul>
<h2>Accuracy vs confidence fraction</h2><img src="{curve_plot(results)}">
<h2>Quadrants</h2><img src="{quadrant_plot(results)}">
<h2>All numbers</h2>{results_table(results)}
<h2>Most-memorized records</h2>{gallery_html(gallery)}
<h2>Data</h2><p>Split counts: {counts}. Crops: {html.escape(skipped)}.</p>
<p>Created {report['created']}; versions {html.escape(str(report['versions']))}.</p>
</body></html>
"""
