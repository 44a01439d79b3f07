"""The runs under a prefix and how far each got (``dejavu report list``).

A run directory is one holding ``config.json``; a stage is finished when its directory holds the
marker, at ``<run>/<stage>/`` or, for the stages a sweep runs per setting, at
``<run>/settings/<setting>/<stage>/``; a run is finished when ``report/report.json`` is there.
Everything is found from one recursive listing of the prefix, then one read per run, all fetched
together: its report.json if it has one (numbers and config), else its config.json (the sweep's
settings). Markers count as they stand: whether they still match the config is ``dejavu run``'s
business (it reruns what changed).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Collection

from study.report.pvalues import p_value
from study import storage
from study.errors import StudyError
from study.frame.context import MARKER, SHARED_STAGES
from study.frame.context import STAGE_NAMES
from study.frame.sweep import setting_points

CONFIG = "config.json"
REPORT = "report/report.json"

@dataclass(frozen=True)
class RunState:
    uri: str
    study: str
    stages: dict[str, tuple[int, int]]  # stage -> (settings where it finished, settings)
    updated: dt.datetime | None  # the newest of config.json, the markers and report.json
    has_report: bool
    report: dict | None  # the report, when it could be read
    problem: str = ""  # why the run's report or config could not be read

    @property
    def finished(self) -> list[str]:
        return [s for s, (done, n) in self.stages.items() if done == n]

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self.stages)


def _settings(config: dict) -> list[str]:
    """The setting names of a sweep or of repeats, or [""] for a run without them."""
    try:
        return [name for name, _, _ in setting_points(config.get("sweep") or {}, int(config.get("repeats", 1)),
                                                      int((config.get("train") or {}).get("seed", 0)))]
    except (StudyError, TypeError, ValueError):
        return [""]


def _stages(files: dict[str, storage.FileInfo], settings: list[str], annotated: bool) -> dict[str, tuple[int, int]]:
    out = {}
    for stage in STAGE_NAMES:
        if stage == "annotate" and not annotated:  # a run without an annotator has no annotate stage
            continue
        if stage in SHARED_STAGES or settings == [""]:
            out[stage] = (int(f"{stage}/{MARKER}" in files), 1)
        else:
            # A sweep over train.snapshot trains once, in its first setting (runner.setting_contexts).
            own = settings[:1] if stage == "train" and settings[0].startswith("snapshot=") else settings
            done = sum(f"settings/{s}/{stage}/{MARKER}" in files for s in own)
            out[stage] = (done, len(own))
    return out


def _run_dirs(listing: list[storage.FileInfo]) -> list[str]:
    """Directories holding config.json, outermost first; none inside another (a run's own files)."""
    runs: list[str] = []
    for f in sorted(listing, key=lambda f: len(f.uri)):
        if f.uri.endswith("/" + CONFIG):
            run = f.uri[: -len(CONFIG) - 1]
            if not any(run.startswith(r + "/") for r in runs):
                runs.append(run)
    return runs


def _owner(uri: str, runs: Collection[str]) -> str | None:
    """The run directory ``uri`` lies in, if any."""
    parent = uri.rsplit("/", 1)[0]
    while "/" in parent and parent not in runs:
        parent = parent.rsplit("/", 1)[0]
    return parent if parent in runs else None


def find_runs(uri: str) -> list[RunState]:
    """Every run below ``uri`` (or ``uri`` itself), with its stages, numbers and last activity."""
    wanted = (CONFIG, MARKER, "report.json")
    listing = [f for f in storage.list_info(storage.absolute(uri)) if f.uri.rsplit("/", 1)[-1] in wanted]
    runs = _run_dirs(listing)
    files: dict[str, dict[str, storage.FileInfo]] = {r: {} for r in runs}
    for f in listing:
        run = _owner(f.uri, files.keys())
        if run is not None:
            files[run][f.uri[len(run) + 1:]] = f
    docs = {r: f"{r}/{REPORT}" if REPORT in files[r] else f"{r}/{CONFIG}" for r in runs}
    raw = storage.read_many(list(docs.values()))
    return [_state(r, files[r], docs[r], raw[docs[r]]) for r in sorted(runs)]


def _state(run: str, files: dict[str, storage.FileInfo], doc_uri: str, raw: bytes | Exception) -> RunState:
    has_report = doc_uri.endswith(REPORT)
    try:
        if isinstance(raw, Exception):
            raise raw
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        doc, problem = {}, f"{doc_uri.rsplit('/', 1)[-1]} could not be read ({type(exc).__name__})"
    else:
        problem = ""
    config = doc.get("config", {}) if has_report else doc
    times = [f.modified for f in files.values() if f.modified is not None]
    return RunState(
        uri=run,
        study=str(doc.get("study") or config.get("study") or "?"),
        stages=_stages(files, _settings(config), bool((config.get("annotate") or {}).get("annotator"))),
        updated=max(times) if times else None,
        has_report=has_report,
        report=doc if has_report and not problem else None,
        problem=problem,
    )


def _state_text(run: RunState) -> str:
    """``finished (all stages)``, or the stages finished, a sweep's partial ones as ``embed 1/4``."""
    parts = [s if done == n else f"{s} {done}/{n}" for s, (done, n) in run.stages.items() if done]
    if run.has_report:
        return "finished (all stages)" if run.all_finished else f"finished ({' '.join(parts)})"
    if not parts:
        return "unfinished (no stage finished)"
    last = run.finished[-1] if run.finished else "none"
    return f"unfinished after {last} ({' '.join(parts)})"


def headline_lines(report: dict) -> list[str]:
    """One line of the headline numbers, or with a sweep one line per headline key across settings."""
    from study.frame.kinds import get_kind

    try:
        listed = get_kind(report.get("study")).list_headline
    except StudyError:
        return [f"report of unknown study kind {report.get('study')!r}"]
    if listed is None:
        return []
    label, number = listed
    sweep = report.get("sweep")
    if not sweep:
        cells = [f"{key} {v:+.3f} (p {p_value(est)})" for key, (v, est) in
                 ((key, number(h)) for key, h in report["headline"].items())]
        return [f"{label}  " + "  ".join(cells)]
    lines = []
    for key in report["headline"]:
        cells = [f"{s['name']} {number(s['headline'][key])[0]:+.3f}" for s in sweep["settings"] if key in s["headline"]]
        lines.append(f"{label} {key}:  " + "  ".join(cells))
    return lines


def run_lines(run: RunState) -> list[str]:
    """One line of state and time, then the headline numbers of a finished run."""
    when = run.updated.strftime("%Y-%m-%d %H:%M UTC") if run.updated else "time unknown"
    lines = [f"{run.uri}  {run.study}  {_state_text(run)}  {when}"]
    if run.problem:
        lines.append(f"    {run.problem}")
    elif run.report is not None:
        try:
            lines += [f"    {line}" for line in headline_lines(run.report)]
        except (KeyError, TypeError, ValueError, IndexError):
            lines.append("    report.json holds no headline this version can read")
    return lines


def print_run_states(uri: str, runs: list[RunState]) -> None:
    if not runs:
        raise StudyError(f"no runs under {uri} (a run directory holds {CONFIG})")
    for run in runs:
        for line in run_lines(run):
            print(line)
    done = sum(r.has_report for r in runs)
    print(f"{len(runs)} runs under {uri}: {done} finished, {len(runs) - done} unfinished")
