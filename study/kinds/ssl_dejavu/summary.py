"""The SSL déjà vu study's lines of ``dejavu report`` (``StudyKind.summary_lines``)."""
from __future__ import annotations

from study.report.pvalues import p_is
from study.report.summary import one_model_headlines


def ssl_lines(report: dict) -> list[str]:
    lines = [
        f"k = {report['k']}, {report['metric']}, crops: {report['crop_rule']['rule']}",
        "gap = target - reference top-1 accuracy at q = 1, 95 % bootstrap interval, paired-test p-value:",
    ]
    def line(key: str, v: dict, reference: str = "reference", indent: str = "  ") -> str:
        return (f"{indent}{key:<22} target {v['target']:.3f}  {reference} {v['reference']:.3f}  "
                f"gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  {p_is(v)}")

    def one_model(setting: dict, indent: str) -> list[str]:
        out = []
        for name, headline in one_model_headlines(setting).items():
            out.append(f"{indent}one-model test, k-NN minus the {name} predictor:")
            out += [line(key, v, "predictor", indent + "  ") for key, v in headline.items()]
        return out

    sweep = report.get("sweep")
    for s in sweep["settings"] if sweep else []:  # every setting of a sweep; the first's details follow
        lines.append(f"  {sweep['key']} = {s['value']}:")
        lines += [line(key, v, indent="    ") for key, v in s["headline"].items()]
        lines += one_model(s, "    ")
    if sweep:
        lines.append(f"{sweep['key']} = {sweep['settings'][0]['value']} (the first setting), in full:")
    lines += [line(key, v) for key, v in report["headline"].items()] or ["  (no reference model: no two-model test)"]
    return lines + one_model(report, "")
