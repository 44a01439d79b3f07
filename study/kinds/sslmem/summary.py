"""The SSLMem study's lines of ``dejavu report`` (``StudyKind.summary_lines``)."""
from __future__ import annotations

from study.report.pvalues import p_is


def sslmem_lines(report: dict) -> list[str]:
    info = report.get("sslmem", {})
    lines = [f"SSLMem: {info.get('views')} views per record; score = align_g - align_f (g never saw the candidates);",
             "candidates' mean score minus the control's, 95 % bootstrap interval, permutation p-value; AUC; share "
             f"above the control's {info.get('high_quantile')} quantile:"]
    sweep = report.get("sweep")
    settings = sweep["settings"] if sweep else [{"name": "", "headline": report["headline"]}]
    for s in settings:
        indent = "  "
        if s["name"]:
            lines.append(f"  {sweep['key']} = {s['value']}:")
            indent = "    "
        for key, v in s["headline"].items():
            lines.append(f"{indent}{key:<34} {v['difference']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]  "
                         f"{p_is(v)}  AUC {v['auc']:.3f}  highly memorized {v['high_share']:.1%} "
                         f"(expected {v['expected_high_share']:.0%})")
    if info.get("scores"):
        lines.append(f"every record's scores: {info['scores']}")
    return lines
