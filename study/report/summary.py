"""Print a finished report's summary from any fsspec location (``dejavu report URI``)."""
from __future__ import annotations

from study import storage
from study.errors import StudyError


def locate(uri: str) -> str:
    """report.json itself, or the report.json inside a report or run directory."""
    uri = uri.rstrip("/")
    for candidate in (uri, storage.join(uri, "report.json"), storage.join(uri, "report", "report.json")):
        if candidate.endswith("report.json") and storage.exists(candidate):
            return candidate
    raise StudyError(f"no report.json found at {uri} (give report.json, its directory or a run directory)")


def summary_lines(report: dict) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in report["splits"]["counts"].items() if v)
    lines = [
        f"study {report['name']} ({report['study']}), k = {report['k']}, {report['metric']}, crops: {report['crop_rule']['rule']}",
        f"splits: {counts}",
        "gap = target - reference top-1 accuracy at q = 1, 95 % bootstrap interval, paired-test p-value:",
    ]
    for key, v in report["headline"].items():
        lines.append(
            f"  {key:<22} target {v['target']:.3f}  reference {v['reference']:.3f}  "
            f"gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  p = {v['p_value']:.4f}"
        )
    return lines


def print_summary(uri: str) -> None:
    path = locate(uri)
    try:
        report = storage.read_json(path)
    except ValueError:
        raise StudyError(f"{path} is not a valid report (JSON could not be read)") from None
    for line in summary_lines(report):
        print(line)
    print(f"report: {path.rsplit('/', 1)[0]}/report.html")
