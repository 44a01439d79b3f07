"""Stage ``report``: ``report.json`` (every number, the resolved config, versions) and
``report.html`` (the kind's plots and gallery in the shared page), written to ``<run>/report/``.

Each file is written atomically; ``report.json`` goes last, so its presence means the report is
whole, on a local disk or in an object store. With a sweep, the report holds every setting.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform

from study import storage
from study.config_load import config_to_dict
from study.frame.context import STAGE_NAMES, RunContext, read_marker
from study.frame.kinds import get_kind
from study.report.annotation_html import annotation_section
from study.report.calibration_html import calibration_section
from study.report.models_html import models_section
from study.report.protocol_html import protocol_section
from study.stages.annotate import ANNOTATED_SHOWN, annotated_figures
from study.report.page import render_page

PACKAGES = ("dejavu-study", "torch", "torchvision", "ray", "numpy", "pyarrow", "lightly", "open_clip_torch")
# FAISS ships under several distribution names; a node reports whichever it has.
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu", "faiss")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return {**out, **faiss_versions()}


def faiss_versions() -> dict[str, str]:
    """``faiss``: the imported module's version; and each installed FAISS distribution's."""
    out = {}
    for name in FAISS_DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import faiss

        out["faiss"] = faiss.__version__
    except ImportError:
        out["faiss"] = "not installed"
    return out


def setting_report(ctx: RunContext) -> dict:
    """One setting's numbers, training summary, embedded/skipped counts and stage times."""
    kind = get_kind(ctx.cfg.study)
    results = storage.read_json(ctx.measure_results)
    markers = {s: read_marker(ctx.stage_dir(s)) or {} for s in STAGE_NAMES if s != "report"}
    return {
        "headline": kind.headline(results),
        "results": results,
        "embedded": markers["embed"].get("summary", {}),
        "training": markers["train"].get("summary", {}),
        # Per model and space: index type, shards, parameters and, for an approximate index, its
        # recall@k against exact search on a sample of queries.
        "search_indexes": markers["search"].get("summary", {}).get("indexes", {}),
        "stage_seconds": {s: m.get("seconds") for s, m in markers.items()},
        # Object-store requests retried after a transient error (a dropped connection, throttling).
        "store_retries": {s: m.get("store_retries", 0) for s, m in markers.items()},
        **kind.extras(ctx),
    }


def quarantine_summary(ctx: RunContext, manifest: dict) -> dict:
    """Records read and quarantined per reason: by the data stage (unusable as read) and by the
    split plan (unusable in their split), with where their ids are."""
    from study.data.loading import split_uri

    data = (read_marker(ctx.stage_dir("data")) or {}).get("summary", {})
    by_stage = {"data": dict(data.get("quarantined", {})), "splits": dict(manifest.get("quarantined", {}))}
    total: dict[str, int] = {}
    for counts in by_stage.values():
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0) + n
    return {
        "records_read": data.get("records_read", data.get("records")),
        "used": sum(manifest.get("counts", {}).values()) + manifest.get("unassigned", 0),
        "quarantined": dict(sorted(total.items())),
        "by_stage": by_stage,
        "ids": {"data": ctx.quarantine_dir, "splits": split_uri(ctx.splits_dir, "quarantined")},
    }


def protocol_summary(cfg) -> dict:
    """The run's protocol, the published one it is compared with, and every choice that differs."""
    from study.config.protocols import compared_with, deviations

    return {"name": cfg.protocol, "compared_with": compared_with(cfg.study, cfg.protocol),
            "deviations": deviations(cfg.study, cfg.protocol, config_to_dict(cfg))}


def build_report(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    settings = list(ctx.settings) or [("", ctx)]
    report = {
        "study": cfg.study,
        "name": cfg.name,
        "run_dir": ctx.run_dir,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "splits": storage.read_json(ctx.manifest),
    }
    report["quarantine"] = quarantine_summary(ctx, report["splits"])
    report["protocol"] = protocol_summary(cfg)
    if cfg.annotate.on:  # the ground truth's own origin, beside the numbers it makes
        report["annotation"] = (read_marker(ctx.stage_dir("annotate")) or {}).get("summary")
    if cfg.sweep or cfg.repeats > 1:
        from study.core.calibration import calibrate, calibrated_headline
        from study.report.summary import one_model_headlines
        from study.frame.sweep import setting_points

        points = setting_points(dict(cfg.sweep), cfg.repeats, cfg.train.seed)
        # Without a sweep, repeats are a sweep over train.seed.
        key = next(iter(cfg.sweep), "train.seed")
        report["sweep"] = {
            "key": key,
            "repeats": cfg.repeats,
            "settings": [
                {"name": name, "value": value if cfg.sweep else seed, "seed": seed, **setting_report(sctx)}
                for (name, sctx), (_, value, seed) in zip(settings, points)
            ],
        }
        if cfg.repeats > 1:
            m = cfg.measure
            report["calibration"] = calibrate(
                [(s["value"] if cfg.sweep else None, calibrated_headline(s["headline"], one_model_headlines(s)))
                 for s in report["sweep"]["settings"]],
                alpha=round(1 - m.confidence_level, 10), level=m.confidence_level, draws=m.bootstrap, seed=m.seed,
                value_key=get_kind(cfg.study).value_key)
        first = report["sweep"]["settings"][0]
    else:
        first = setting_report(ctx)
    # The first (or only) setting's numbers stand at the top level as well.
    report.update({k: first[k] for k in first if k not in ("name", "value")})
    # Which kind of interval the numbers carry (the calibration section's own are labelled there).
    report["intervals"] = "per-run: records resampled, conditional on the run's trained models" + (
        "; calibration: over training seeds" if cfg.repeats > 1 else "")
    report["config"] = config_to_dict(cfg)
    report["versions"] = versions()
    return report


def run_report(ctx: RunContext) -> dict:
    kind = get_kind(ctx.cfg.study)
    report = build_report(ctx)
    # The gallery shows the records of the first (or only) setting, whose numbers top the report.
    _, gallery_ctx = (list(ctx.settings) or [("", ctx)])[0]
    figures = annotated_figures(ctx, ANNOTATED_SHOWN) if report.get("annotation") else []
    page = render_page(report, kind.html(report, kind.gallery(gallery_ctx, report)) + calibration_section(report)
                       + annotation_section(report, figures) + models_section(report) + protocol_section(report))
    storage.write_bytes(ctx.report_html, page.encode())
    storage.write_json(ctx.report_json, report)
    ctx.log("report", f"wrote {ctx.report_json} and report.html")
    return {"report": ctx.report_json, "headline": report["headline"]}


def nearest_public(ctx: RunContext, rows: list[dict], space: str, shown: int) -> dict[str, list[str]]:
    """The first ``shown`` public neighbours of each gallery row (keys: id, target_model, split),
    reading from each search result only the rows of its gallery queries (a pushed-down filter)."""
    from study.search.results import read_neighbours

    wanted: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        wanted.setdefault((r["target_model"], r["split"]), []).append(r["id"])
    found = {key: read_neighbours(ctx.search_results(*key, space), ids) for key, ids in wanted.items()}
    return {r["id"]: [n for n in found[(r["target_model"], r["split"])][r["id"]][:shown] if n] for r in rows}
