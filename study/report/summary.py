"""Print a finished report's summary from any fsspec location (``dejavu report URI``).

Each study kind has its own headline lines (``SUMMARY_LINES``); the rest is shared.
"""
from __future__ import annotations

from typing import Callable

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


def _est(v: dict) -> str:
    return f"{v['value']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  p = {v['p_value']:.4f}"


def ssl_lines(report: dict) -> list[str]:
    lines = [
        f"k = {report['k']}, {report['metric']}, crops: {report['crop_rule']['rule']}",
        "gap = target - reference top-1 accuracy at q = 1, 95 % bootstrap interval, paired-test p-value:",
    ]
    def line(key: str, v: dict, reference: str = "reference", indent: str = "  ") -> str:
        return (f"{indent}{key:<22} target {v['target']:.3f}  {reference} {v['reference']:.3f}  "
                f"gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  p = {v['p_value']:.4f}")

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


def _vlm_setting_lines(headline: dict, indent: str) -> list[str]:
    lines = []
    for key, v in headline.items():
        lines.append(f"{indent}{key:<30} PPG {_est(v['ppg'])}")
        lines.append(f"{indent}{'':<30} PRG {_est(v['prg'])}   AUCG {_est(v['aucg'])}")
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
                         f"p = {v['p_value']:.4f}  AUC {v['auc']:.3f}  highly memorized {v['high_share']:.1%} "
                         f"(expected {v['expected_high_share']:.0%})")
    if info.get("scores"):
        lines.append(f"every record's scores: {info['scores']}")
    return lines


SUMMARY_LINES: dict[str, Callable[[dict], list[str]]] = {"ssl_dejavu": ssl_lines, "vlm_dejavu": vlm_lines,
                                                          "sslmem": sslmem_lines}


def summary_lines(report: dict) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in report["splits"]["counts"].items() if v)
    if report.get("study") not in SUMMARY_LINES:
        raise StudyError(f"report of unknown study kind {report.get('study')!r}")
    from study.report.calibration_html import calibration_lines

    return [f"study {report['name']} ({report['study']})", f"splits: {counts}", *SUMMARY_LINES[report["study"]](report),
            *calibration_lines(report)]


def print_summary(uri: str) -> None:
    path = locate(uri)
    try:
        report = storage.read_json(path)
    except ValueError:
        raise StudyError(f"{path} is not a valid report (JSON could not be read)") from None
    for line in summary_lines(report):
        print(line)
    print(f"report: {path.rsplit('/', 1)[0]}/report.html")
