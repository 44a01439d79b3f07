"""The report's part on models trained elsewhere: for each imported model, the file it came from,
its format, its fingerprint (sha256 of the file or folder) and the input scaling it was measured
with. Takes plain data (the train stage's summary in ``report["training"]``)."""
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


def models_lines(report: dict) -> list[str]:
    """The same, as text lines for ``dejavu report``."""
    return [f"{m} ({MODELS[m]}): imported from {i['checkpoint']} ({i['format']}, sha256 {i.get('fingerprint', '?')[:16]}…)"
            for m, i in _imported(report)]


def models_section(report: dict) -> str:
    imported = _imported(report)
    if not imported:
        return ""
    rows = [[f"{m} ({MODELS[m]})", html.escape(i["checkpoint"]), html.escape(i["format"]),
             f"<code>{html.escape(i.get('fingerprint', ''))}</code>", html.escape(_scaling(i))] for m, i in imported]
    return ("<h2>Models trained elsewhere</h2><p>These models were imported, not trained by this run; their "
            "weights are identified by the sha256 of their file (or of a folder's files, names and contents).</p>"
            + table(["model", "from", "format", "sha256", "input scaling"], rows))
