"""Command line: ``dejavu run CONFIG`` runs a study, ``dejavu report URI`` prints a summary.

A StudyError (bad config, missing input) prints as one ``error:`` line with exit status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from study.errors import StudyError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dejavu", description="Déjà vu memorization studies on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a study from a YAML config")
    run.add_argument("config", help="study config (YAML)")
    run.add_argument("--output", help="output root: a local directory or any fsspec URI (s3://bucket/prefix)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.epochs=20 (repeatable)")
    rep = sub.add_parser("report", help="print the summary of a finished report")
    rep.add_argument("uri", help="report.json, its directory, or a run directory (local path or fsspec URI)")
    return p


def _run(args: argparse.Namespace) -> int:
    from study.config_load import load_config
    from study.pipeline.runner import run_study
    from study.report.summary import print_summary

    cfg = load_config(args.config, args.overrides, args.output)
    ctx = run_study(cfg)
    print_summary(ctx.report_json)
    return 0


def _report(args: argparse.Namespace) -> int:
    from study.report.summary import print_summary

    print_summary(args.uri)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": _run, "report": _report}[args.command](args)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # an output or input location the user cannot use
        print(f"error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished stage", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
