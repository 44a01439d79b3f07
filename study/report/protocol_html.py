"""The report's protocol part: which protocol the run followed (``protocol:``), the published one
it is compared with, and every choice where the run differs from it (``study.config.protocols``).
Takes plain data."""
from __future__ import annotations

import html

from study.report.page import table


def protocol_lines(report: dict) -> list[str]:
    """The same, as text lines for ``dejavu report``."""
    p = report.get("protocol")
    if not p or not p.get("compared_with"):
        return []
    head = f"protocol {p['name']}"
    if not p["deviations"]:
        return [f"{head}: every choice as published ({p['compared_with']})"]
    return [f"{head}; differs from {p['compared_with']} in {len(p['deviations'])} choice(s): "
            + "; ".join(f"{d['choice']} {d['this run']} (published {d['published']})" for d in p["deviations"])]


def protocol_section(report: dict) -> str:
    p = report.get("protocol")
    if not p or not p.get("compared_with"):
        return ""
    rows = [[html.escape(str(d["choice"])), html.escape(str(d["published"])), html.escape(str(d["this run"]))]
            for d in p["deviations"]]
    body = table(["choice", "published", "this run"], rows) if rows else "<p>Every choice as published.</p>"
    return (f"<h2>Protocol</h2><p>This run followed protocol <b>{html.escape(p['name'])}</b>; compared with the "
            f"published <b>{html.escape(p['compared_with'])}</b>, these choices differ (a config sets each on top "
            f"of its protocol; <code>protocol: {html.escape(p['compared_with'])}</code> sets the published "
            f"ones that have a key):</p>{body}")
