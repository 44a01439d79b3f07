"""The report's part on what came from elsewhere: for each imported model, the file it came from,
its format, its fingerprint (sha256 of the file or folder) and the input scaling it was measured
with; and the splits when the user gave them (``splits.assignments``): the file, its fingerprint,
what it listed and what the data lacked. Takes plain data (the train stage's summary in
``report["training"]``, the split manifest in ``report["splits"]``)."""
from __future__ import annotations

import html

from study.frame.kinds import MODELS
from study.report.page import table


def _imported(report: dict) -> list[tuple[str, dict]]:
    training = report.get("training") or {}
    return [(m, training[m]) for m in MODELS if isinstance(training.get(m), dict) and "checkpoint" in training[m]]


def _scaling(info: dict) -> str:
    if "image_mean" not in info:
        return "as saved"
    return f"mean {info['image_mean']}, std {info['image_std']}"


def splits_sentence(report: dict) -> str:
    """How the user's splits came in, in one sentence ('' when the product planned them)."""
    given = (report.get("splits") or {}).get("assignments")
    if not given:
        return ""
    listed = ", ".join(f"{s} {n}" for s, n in given["listed"].items())
    missing = sum(given["missing"].values())
    out = (f"The splits came from the user: {given['uri']} (sha256 {given['fingerprint'][:16]}…) listed {listed}; "
           + (f"{missing} listed record(s) are not in the data ({', '.join(f'{s} {n}' for s, n in given['missing'].items() if n)}; "
              f"ids in {given['missing_ids']})" if missing else "every listed record is in the data")
           + (f"; {given['repeated_rows']} repeated row(s) counted once" if given["repeated_rows"] else "")
           + f"; {report['splits'].get('unassigned', 0)} record(s) of the data in no split.")
    if "holdout" not in given["listed"]:
        out += " No holdout split was given: no null control was possible."
    return out


def spaces_sentence(report: dict) -> str:
    """Why a space was not measured ('' when every space was)."""
    bare = [m for m, i in _imported(report) if i.get("projector") is False]
    if not bare:
        return ""
    return (f"The projector space was not measured: {' and '.join(bare)} came without projector weights "
            "(the backbone space alone).")


def models_lines(report: dict) -> list[str]:
    """The same, as text lines for ``dejavu report``."""
    notes = [n for n in (spaces_sentence(report), splits_sentence(report)) if n]
    return [f"{m} ({MODELS[m]}): imported from {i['checkpoint']} ({i['format']}, sha256 {i.get('fingerprint', '?')[:16]}…)"
            for m, i in _imported(report)] + notes


def models_section(report: dict) -> str:
    imported, given = _imported(report), splits_sentence(report)
    if not imported and not given:
        return ""
    rows = [[f"{m} ({MODELS[m]})", html.escape(i["checkpoint"]), html.escape(i["format"]),
             f"<code>{html.escape(i.get('fingerprint', ''))}</code>", html.escape(_scaling(i))] for m, i in imported]
    models = ("<p>These models were imported, not trained by this run; their weights are identified by the sha256 "
              "of their file (or of a folder's files, names and contents).</p>"
              + table(["model", "from", "format", "sha256", "input scaling"], rows)) if imported else ""
    spaces = spaces_sentence(report)
    return ("<h2>Models and splits from elsewhere</h2>" + models + (f"<p>{html.escape(spaces)}</p>" if spaces else "")
            + (f"<p>{html.escape(given)}</p>" if given else ""))
