"""The VLM déjà vu study's lines of ``dejavu report`` (``StudyKind.summary_lines``)."""
from __future__ import annotations

from study.report.summary import est, one_model_headlines


def _vlm_setting_lines(headline: dict, indent: str) -> list[str]:
    lines = []
    for key, v in headline.items():
        lines.append(f"{indent}{key:<30} PPG {est(v['ppg'])}")
        lines.append(f"{indent}{'':<30} PRG {est(v['prg'])}   AUCG {est(v['aucg'])}")
    return lines


def vlm_lines(report: dict) -> list[str]:
    lines = [
        f"headline {report.get('headline_key', '')} (of k in {report['ks']}), caption -> public images, {report['metric']}",
        "PPG/PRG = share of records where the target beats the reference on precision/recall minus the reverse;",
        "AUCG = area between the recall curves; 95 % bootstrap interval, paired-test p-value:",
    ]
    sweep = report.get("sweep")
    settings = sweep["settings"] if sweep else [{"name": "", "headline": report["headline"], "utility": report.get("utility"),
                                                  "one_model": report.get("one_model")}]
    for s in settings:
        indent = "  "
        if s["name"]:
            lines.append(f"  {sweep['key']} = {s['value']}:")
            indent = "    "
        lines += _vlm_setting_lines(s["headline"], indent) or [f"{indent}(no reference model: no two-model test)"]
        util = s.get("utility") or {}
        if util:
            parts = [f"{k} {v:.3f}" for k, v in util.items() if isinstance(v, float)]
            lines.append(f"{indent}utility: {', '.join(parts)}")
        for name, headline in one_model_headlines(s).items():
            lines.append(f"{indent}one-model test, the target against the {name} (nearest public captions) as reference:")
            lines += _vlm_setting_lines(headline, indent + "  ")
    return lines
