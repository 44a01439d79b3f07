"""Print a finished report's summary from any fsspec location (``dejavu report URI``).

Each study kind has its own headline lines (``StudyKind.summary_lines``); the rest is shared.
"""
from __future__ import annotations

from study.report.pvalues import p_is
from study import storage
from study.errors import StudyError


def locate(uri: str) -> str:
    """report.json itself, or the report.json inside a report or run directory."""
    uri = uri.rstrip("/")
    for candidate in (uri, storage.join(uri, "report.json"), storage.join(uri, "report", "report.json")):
        if candidate.endswith("report.json") and storage.exists(candidate):
            return candidate
    raise StudyError(f"no report.json found at {uri} (give report.json, its directory or a run directory)")


def one_model_headlines(entry: dict) -> dict[str, dict]:
    """{predictor: its headline} of a report's (or a sweep setting's) one-model tests; empty without."""
    return (entry.get("one_model") or {}).get("headline") or {}


def est(v: dict) -> str:
    """An estimate with its interval and p-value, as the summaries print it."""
    return f"{v['value']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  {p_is(v)}"


def summary_lines(report: dict) -> list[str]:
    from study.frame.kinds import get_kind
    from study.report.annotation_html import annotation_lines
    from study.report.calibration_html import calibration_lines
    from study.report.models_html import models_lines
    from study.report.protocol_html import protocol_lines

    counts = ", ".join(f"{k} {v}" for k, v in report["splits"]["counts"].items() if v)
    try:
        kind = get_kind(report.get("study"))
    except StudyError:
        raise StudyError(f"report of unknown study kind {report.get('study')!r}") from None
    return [f"study {report['name']} ({report['study']})", f"splits: {counts}", *kind.summary_lines(report),
            *calibration_lines(report), *annotation_lines(report), *models_lines(report), *protocol_lines(report)]
