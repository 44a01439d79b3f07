"""Command line: ``dejavu run CONFIG`` runs a study, ``dejavu report URI`` prints a summary,
``dejavu data synth`` writes synthetic records in img2dataset's layouts (inputs for the
``webdataset`` and ``img2dataset`` sources at any scale, without downloading anything).

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
    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write synthetic records as img2dataset output (one Ray task per shard)")
    synth.add_argument("--format", required=True, help="webdataset (NNNNN.tar) or parquet (NNNNN.parquet)")
    synth.add_argument("--num", type=int, required=True, help="number of records")
    synth.add_argument("--output", required=True, help="output folder: a local directory or any fsspec URI")
    synth.add_argument("--objects", help="side table of objects, labels and boxes (default OUTPUT/objects.parquet)")
    synth.add_argument("--shard-size", type=int, help="records per shard (default data.shard_size)")
    synth.add_argument("--seed", type=int, help="generator seed (default data.seed)")
    synth.add_argument("--overwrite", action="store_true", help="replace what OUTPUT already holds")
    synth.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a data.* generator option or a ray.* setting, e.g. --set data.image_size=64")
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


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from study import storage
    from study.config_load import load_config
    from study.data.synth_write import FORMAT_SOURCES, throttled, write_synthetic
    from study.errors import ConfigError
    from study.pipeline.runner import ensure_ray

    if args.format not in FORMAT_SOURCES:
        raise StudyError(f"data synth: unknown format '{args.format}'; choose from {sorted(FORMAT_SOURCES)}")
    foreign = [o for o in args.overrides if not o.startswith(("data.", "ray."))]
    if foreign:
        raise ConfigError(f"data synth: --set takes data.* and ray.* keys, got {foreign[0]!r}")
    flags = [f"data.num_images={args.num}"] + [f"data.{k}={v}" for k, v in (("shard_size", args.shard_size),
                                                                         ("seed", args.seed)) if v is not None]
    cfg = load_config(None, args.overrides + flags)
    output = storage.absolute(args.output)
    if storage.exists(output) and storage.list_files(output):
        if not args.overwrite:
            raise StudyError(f"{output} already holds files; choose an empty location or pass --overwrite")
        storage.remove(output)
    ensure_ray(cfg)
    start = time.perf_counter()

    def progress(done: int, shards: int, n: int) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] wrote {done}/{shards} shards ({n}/{cfg.data.num_images} records)",
              flush=True)

    objects = args.objects and storage.absolute(args.objects)
    out = write_synthetic(cfg.data, args.format, output, objects, throttled(progress, every_s=2.0))
    print(f"{out['records']} records in {out['shards']} {args.format} shards under {output}; "
          f"side table {out['objects']}")
    print(f"use them with: --set data.source={FORMAT_SOURCES[args.format]} --set data.path={output} "
          f"--set data.objects={out['objects']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": _run, "report": _report, "data": _data_synth}
    try:
        return commands[args.command](args)
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
