"""``report.html`` scaffolding shared by every study kind: one self-contained page (plots and
images inlined as PNG data URIs). A kind supplies the body; this module the frame, the helpers
for figures and thumbnails, and the data and versions footer. Takes plain data, knows no stage.
"""
from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from study.report.pvalues import p_is  # noqa: E402

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px}"
)


def png(fig) -> str:
    """A matplotlib figure as a data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_uri(image: np.ndarray, size: int = 96) -> str:
    """An (H, W, 3) uint8 image scaled to ``size`` on its longer side, as a data URI."""
    buf = io.BytesIO()
    h, w = image.shape[:2]
    scale = size / max(h, w)
    # Small scenes are enlarged pixel for pixel; photographs shrink smoothly.
    Image.fromarray(image).resize((max(1, int(w * scale)), max(1, int(h * scale))),
                                  Image.NEAREST if scale >= 1 else Image.BILINEAR).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def fmt(est: dict, p: bool = False) -> str:
    """``value [lo, hi]`` (and the p-value) of an estimate, as HTML."""
    text = f"{est['value']:.3f} [{est['ci'][0]:.3f}, {est['ci'][1]:.3f}]"
    return text + (f", {html.escape(p_is(est))}" if p else "")


def table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render_page(report: dict, body: str) -> str:
    """The whole page around a kind's body: title, data counts, skipped records, versions."""
    counts = ", ".join(f"{k} {v}" for k, v in report["splits"]["counts"].items())
    skipped = "; ".join(
        f"{s}: {c['embedded']} embedded, skipped {c['skipped'] or 'none'}" for s, c in report.get("embedded", {}).get("sets", {}).items()
    )
    name = html.escape(report["name"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>déjà vu report: {name}</title>
<style>{STYLE}</style></head><body>
<h1>Déjà vu memorization report: {name}</h1>
{body}
<h2>Data</h2><p>Split counts: {counts}. Records used and skipped: {html.escape(skipped) or 'none skipped'}.</p>
<p>Created {report['created']}; versions {html.escape(str(report['versions']))}.</p>
</body></html>
"""
