"""Command line: ``dejavu run CONFIG`` runs a study, ``dejavu report URI`` prints a summary
(``report pull`` copies a report to a local directory, ``report list`` lists the runs under a prefix),
``dejavu data synth`` writes synthetic records in every input layout the product reads
(img2dataset's tar and Parquet output, COCO, VOC class folders) at any scale, without
downloading anything,
``dejavu data inspect`` prints what a study would get from an input (nothing is written but the
optional page); ``dejavu data annotate`` runs a config's annotator over an input and says where its
side table is.

A StudyError (bad config, missing input) prints as one ``error:`` line with exit status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from study.errors import StudyError, causes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dejavu", description="Déjà vu memorization studies on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a study from a YAML config")
    run.add_argument("config", help="study config (YAML)")
    loud = run.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                      help="show warnings and the result only (run.log under the run directory has every line)")
    loud.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                      help="also show the debug lines")
    run.add_argument("--output", help="output root: a local directory or any fsspec URI (s3://bucket/prefix)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.epochs=20 (repeatable)")
    run.add_argument("--until", metavar="STAGE",
                     help="run the stages up to and including STAGE only (data, splits, train, embed, search, "
                          "measure, report); finished ones are reused")
    _report_parser(sub)
    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write synthetic records in an input layout (one Ray task per shard)")
    synth.add_argument("--format", required=True,
                       help="webdataset (NNNNN.tar), parquet (img2dataset's NNNNN.parquet), coco or voc")
    synth.add_argument("--num", type=int, required=True, help="number of records")
    synth.add_argument("--output", required=True, help="output folder: a local directory or any fsspec URI")
    synth.add_argument("--objects", help="side table of objects, labels and boxes (default OUTPUT/objects.parquet)")
    synth.add_argument("--shard-size", type=int, help="records per shard (default data.shard_size)")
    synth.add_argument("--seed", type=int, help="generator seed (default data.seed)")
    synth.add_argument("--overwrite", action="store_true", help="replace what OUTPUT already holds")
    synth.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a data.* generator option or a ray.* setting, e.g. --set data.image_size=64")
    inspect = data.add_parser("inspect", help="statistics of an input as a study would read it (one Ray Data pass)")
    inspect.add_argument("uri", help="the input: a local directory or any fsspec URI (s3://bucket/prefix)")
    inspect.add_argument("--source", default="parquet",
                         help="how to read it: a data.source (default parquet: record shards)")
    inspect.add_argument("--study", default="ssl_dejavu", help="ssl_dejavu (crop check) or vlm_dejavu (caption check)")
    inspect.add_argument("--html", metavar="OUT.html", help="also write a page with the statistics and a montage")
    inspect.add_argument("--sample", type=int, default=24, help="records in the page's montage (default 24)")
    inspect.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="a data.*, embed.crop.*, annotate.* or ray.* setting, e.g. --set data.objects=URI "
                              "(annotate.*: preview an annotator on the sampled records)")
    annotate = data.add_parser("annotate", help="annotate an input with a detector or tagger: its objects side table")
    annotate.add_argument("uri", help="the input: a local directory or any fsspec URI (s3://bucket/prefix)")
    annotate.add_argument("--config", help="a study config whose annotate section names the annotator")
    annotate.add_argument("--source", default="webdataset", help="how to read it: a data.source (default webdataset)")
    annotate.add_argument("--output", help="output root (default: the config's output)")
    annotate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="a config setting, e.g. --set annotate.score=0.3")
    return p


REPORT_COMMANDS = ("show", "pull", "list")
REPORT_URI_HELP = "report.json, its directory, or a run directory (local path or fsspec URI)"


def _report_parser(sub) -> None:
    rep = sub.add_parser(
        "report", help="print, pull or list reports (dejavu report URI prints a summary)",
        description="dejavu report URI is short for dejavu report show URI. A run directory literally "
                    "named show, pull or list is given as ./list (or after show).")
    cmds = rep.add_subparsers(dest="report_command", required=True, metavar="{show,pull,list}")
    show = cmds.add_parser("show", help="print the summary of a finished report (the default)")
    show.add_argument("uri", help=REPORT_URI_HELP)
    pull = cmds.add_parser("pull", help="copy a finished report (report.json, report.html) to a local directory")
    pull.add_argument("uri", help=REPORT_URI_HELP)
    pull.add_argument("dest", nargs="?",
                      help="where to put it: a local directory or any fsspec URI (default ./<name>/<run id>/report)")
    pull.add_argument("--overwrite", action="store_true", help="replace what DEST already holds")
    runs = cmds.add_parser("list", help="the runs under a prefix: finished stages, headline numbers, last activity")
    runs.add_argument("uri", help="an output root, a study's directory or a run directory (local path or fsspec URI)")


def _with_report_default(argv: list[str]) -> list[str]:
    """``dejavu report URI`` as ``dejavu report show URI``."""
    if len(argv) >= 2 and argv[0] == "report" and argv[1] not in (*REPORT_COMMANDS, "-h", "--help"):
        return ["report", "show", *argv[1:]]
    return argv


def _run(args: argparse.Namespace) -> int:
    from study import api

    report = api.run(args.config, args.overrides, args.output, until=args.until)
    if report is None:
        from study.frame.context import RunContext

        run_dir = RunContext.create(api.load_config(args.config, args.overrides, args.output)).run_dir
        print(f"finished the stages up to {args.until} in {run_dir}; rerun without --until to go on")
        return 0
    _print_report(report)
    return 0


def _print_report(report) -> None:
    for line in report.summary():
        print(line)
    print(f"report: {report.html}")


def _report_show(args: argparse.Namespace) -> int:
    from study import api

    _print_report(api.open_report(args.uri))
    return 0


def _report_pull(args: argparse.Namespace) -> int:
    from study import api
    from study.report.pull import print_pulled

    print_pulled(api.pull_report(args.uri, args.dest, args.overwrite))
    return 0


def _report_list(args: argparse.Namespace) -> int:
    from study import api
    from study.report.runs import print_run_states

    print_run_states(args.uri, api.list_reports(args.uri))
    return 0


def _report(args: argparse.Namespace) -> int:
    return {"show": _report_show, "pull": _report_pull, "list": _report_list}[args.report_command](args)


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from study import api

    start = time.perf_counter()

    def progress(done: int, shards: int, n: int) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] wrote {done}/{shards} shards ({n}/{args.num} records)", flush=True)

    flags = [f"data.{k}={v}" for k, v in (("shard_size", args.shard_size), ("seed", args.seed)) if v is not None]
    out = api.synth(args.output, args.format, args.num, args.overrides + flags, args.objects, args.overwrite, progress)
    print(out["description"])
    print("use them with: " + " ".join(f"--set {shlex.quote(flag)}" for flag in out["flags"]))
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    import json

    from study.config_load import load_config
    from study.errors import ConfigError
    from study.stages.data_inspect import run_inspect
    from study.preflight import check_inputs

    foreign = [o for o in args.overrides if not o.startswith(("data.", "embed.crop.", "ray.", "annotate."))]
    if foreign:
        raise ConfigError(f"data inspect: --set takes data.*, embed.crop.*, annotate.* and ray.* keys, got {foreign[0]!r}")
    # JSON-quoted: the URI and names are taken as they are, never read as YAML (a path "1e3" or "[raw]/x")
    flags = [f"data.source={json.dumps(args.source)}", f"data.path={json.dumps(args.uri)}",
             f"study={json.dumps(args.study)}"]
    cfg = load_config(None, flags + args.overrides)
    # Object stores only: for a local path the inspection's own messages say more.
    check_inputs({"data inspect": args.uri, "data.objects": cfg.data.objects}, local=False)
    run_inspect(cfg, args.html, args.sample)
    return 0


def _data_annotate(args: argparse.Namespace) -> int:
    from study import api
    from study.report.annotation_html import annotation_lines

    summary = api.annotate(args.config, args.uri, args.source, args.overrides, args.output)
    for line in annotation_lines({"annotation": summary}):
        print(line)
    print(f"side table: {summary['side_table']} (a study over the same images reads it with "
          f"--set data.objects={shlex.quote(summary['side_table'])})")
    return 0


def _data(args: argparse.Namespace) -> int:
    return {"synth": _data_synth, "inspect": _data_inspect, "annotate": _data_annotate}[args.data_command](args)


def main(argv: list[str] | None = None) -> int:
    from study import console

    from study.frame.cluster import own_console

    args = _parser().parse_args(_with_report_default(sys.argv[1:] if argv is None else list(argv)))
    console.configure(getattr(args, "verbosity", 0))
    own_console()  # the command's process: Ray Data's own progress lines off
    commands = {"run": _run, "report": _report, "data": _data}
    try:
        return commands[args.command](args)
    except StudyError as exc:  # also Ray's wrapper of a task's StudyError, whose text holds the task's traceback
        print(f"error: {_study_error(exc)}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # an output or input location the user cannot use
        print(f"error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished stage", file=sys.stderr)
        return 130
    except Exception as exc:  # a user mistake found inside a Ray task arrives wrapped by Ray
        from study.preflight import store_error

        # An object store that stops answering, or refuses, in the middle of a stage.
        found = _study_error(exc) or store_error(None, exc, "running the command")
        if found is None:
            raise
        print(f"error: {found}", file=sys.stderr)
        return 2


def _study_error(exc: BaseException) -> StudyError | None:
    """The StudyError a Ray task raised, from the exception Ray re-raised on the driver (its
    ``cause`` or ``__cause__`` chain), else None: the innermost one, since Ray's re-raised error
    is itself an instance of the task's error class, with the task's traceback as its text."""
    found = [e for e in causes(exc) if isinstance(e, StudyError)]
    return found[-1] if found else None


def entry() -> None:
    """The ``dejavu`` command: ``main`` with the console sorted (``study.console_streams``: Ray's
    own lines go to run.log, the product's to the terminal)."""
    from study.console_streams import routed

    with routed(before_exit=_stop_ray):
        code = main()
    sys.exit(code)


def _stop_ray() -> None:
    """Ray's last lines while it shuts down are sorted like the others."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    entry()
