"""Copy a finished report from any fsspec location to a local directory (``dejavu report pull``).

A report is the files of a run's ``report/`` directory (``report.json``, ``report.html`` with its
plots and gallery inline); the stage marker and any temporaries in flight are left behind. Each
file is copied byte for byte and written atomically, ``report.json`` last, so that, as in the run,
its presence means the copy is whole.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from study import storage
from study.errors import StudyError
from study.report.summary import locate


@dataclass(frozen=True)
class Pulled:
    source: str  # the report directory copied
    dest: str
    files: dict[str, int]  # name relative to the report directory -> bytes


def default_dest(report: dict, report_json: str) -> str:
    """``<name>/<run id>/report`` below the working directory: the run's own layout, so reports of
    several runs of one study do not collide and ``dejavu report <name>/<run id>`` reads the copy."""
    run_dir = str(report.get("run_dir") or posixpath.dirname(posixpath.dirname(report_json)))
    name, run_id = report.get("name"), posixpath.basename(run_dir.rstrip("/"))
    if not name or not run_id:
        raise StudyError(f"{report_json} names no study or run; give the destination: dejavu report pull URI DEST")
    return storage.join(str(name), run_id, "report")


def _overlaps(a: str, b: str) -> bool:
    a, b = storage.absolute(a).rstrip("/") + "/", storage.absolute(b).rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def pull_report(uri: str, dest: str | None = None, overwrite: bool = False) -> Pulled:
    """Copy the report at ``uri`` (report.json, its directory or a run directory) to ``dest``."""
    report_json = locate(uri)
    source = report_json.rsplit("/", 1)[0]
    try:
        report = storage.read_json(report_json)
    except ValueError:
        raise StudyError(f"{report_json} is not a valid report (JSON could not be read)") from None
    dest = storage.absolute(dest or default_dest(report, report_json))
    if _overlaps(source, dest):
        raise StudyError(f"destination {dest} overlaps the report being pulled ({source}); choose another")
    storage.clear_for_writing(dest, overwrite)
    root = storage.fs_and_path(source)[1]
    names = {posixpath.relpath(storage.fs_and_path(src)[1], root): src for src in storage.list_files(source)}
    files = {}
    for name in sorted(names, key=lambda n: n == "report.json"):
        files[name] = storage.copy_file(names[name], storage.join(dest, *name.split("/")))
    return Pulled(source, dest, files)


def print_pulled(pulled: Pulled) -> None:
    for name, size in pulled.files.items():
        print(f"  {name:<24} {size:>12,} bytes")
    total = sum(pulled.files.values())
    print(f"pulled {len(pulled.files)} files ({total:,} bytes) from {pulled.source} to {pulled.dest}")
    if "report.html" in pulled.files:
        print(f"open {storage.join(pulled.dest, 'report.html')}")
