"""Stage ``report``: ``report.json`` (every number, the resolved config, versions) and
``report.html`` (plots and the gallery), written to ``<run>/report/``.

Each file is written atomically; ``report.json`` goes last, so its presence means the report is
whole, on a local disk or in an object store.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform

import numpy as np
import pyarrow.parquet as pq

from study import storage
from study.config_load import config_to_dict
from study.data.loading import load_images
from study.data.records import read_records, iter_boxes
from study.embed.views import crop_for
from study.pipeline.context import RunContext, read_marker
from study.report.html import render_html

PACKAGES = ("dejavu-study", "torch", "torchvision", "ray", "faiss-cpu", "numpy", "pyarrow", "lightly")
STAGES = ("data", "splits", "train", "embed", "search", "measure")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def headline(results: dict) -> dict:
    """Gap at q = 1 (top-1) per representation and control: the numbers quoted first."""
    out = {}
    for rep, controls in results.items():
        for control, res in controls.items():
            entry = max(res["top1"]["by_q"], key=lambda e: e["q"])
            out[f"{rep}/{control}"] = {
                "target": entry["target"]["value"],
                "reference": entry["reference"]["value"],
                "gap": entry["gap"]["value"],
                "ci": entry["gap"]["ci"],
                "p_value": entry["gap"]["p_value"],
            }
    return out


def build_report(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    results = storage.read_json(ctx.stage_dir("measure", "results.json"))
    markers = {s: read_marker(ctx.stage_dir(s)) or {} for s in STAGES}
    return {
        "study": cfg.study,
        "name": cfg.name,
        "run_dir": ctx.run_dir,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "headline": headline(results),
        "results": results,
        "splits": storage.read_json(storage.join(ctx.splits_dir, "manifest.json")),
        "crops": markers["embed"].get("summary", {}),
        "k": cfg.search.k,
        "metric": cfg.search.metric,
        "crop_rule": config_to_dict(cfg.embed.crop),
        "training": markers["train"].get("summary", {}),
        "stage_seconds": {s: markers[s].get("seconds") for s in STAGES},
        "config": config_to_dict(cfg),
        "versions": versions(),
    }


def gallery(ctx: RunContext, report: dict) -> list[dict]:
    """Most-memorized records of the positive control: crop, original, nearest public images."""
    rep = next(iter(report["results"]), None)
    rows = report["results"].get(rep, {}).get("positive", {}).get("most_memorized", []) if rep else []
    if not rows:
        return []
    shown = ctx.cfg.report.neighbors_shown
    meta = read_records(ctx.data_root, [r["id"] for r in rows], columns=["id", "width", "height", "label", "boxes"])
    rects = {
        i: crop_for(w, h, b, lab, ctx.cfg.embed.crop)[0]
        for i, w, h, lab, b in zip(
            meta.column("id").to_pylist(), meta.column("width").to_pylist(), meta.column("height").to_pylist(),
            meta.column("label").to_pylist(), iter_boxes(meta.column("boxes")),
        )
    }
    tables = {}  # one read per search file, however many gallery rows come from it
    neighbours = {}
    for r in rows:
        key = (r["target_model"], r["split"])
        if key not in tables:
            uri = ctx.stage_dir("search", *key, rep, "part-00000.parquet")
            with storage.open_read(uri) as fh:
                table = pq.read_table(fh, columns=["query_id", "neighbor_ids"])
            tables[key] = dict(zip(table.column("query_id").to_pylist(), table.column("neighbor_ids").to_pylist()))
        neighbours[r["id"]] = [n for n in tables[key][r["id"]][:shown] if n]
    images = load_images(ctx.data_root, [r["id"] for r in rows] + [n for ns in neighbours.values() for n in ns])
    out = []
    for r in rows:
        original = images[r["id"]]
        x0, y0, x1, y1 = rects[r["id"]]
        out.append({
            **r,
            "representation": rep,
            "original": original,
            "crop": np.ascontiguousarray(original[y0:y1, x0:x1]),
            "neighbours": [images[n] for n in neighbours[r["id"]]],
        })
    return out


def run_report(ctx: RunContext) -> dict:
    report = build_report(ctx)
    out = ctx.stage_dir("report")
    html = render_html(report, gallery(ctx, report))
    storage.write_bytes(storage.join(out, "report.html"), html.encode())
    storage.write_json(storage.join(out, "report.json"), report)
    ctx.log("report", f"wrote {storage.join(out, 'report.json')} and report.html")
    return {"report": storage.join(out, "report.json"), "headline": report["headline"]}
