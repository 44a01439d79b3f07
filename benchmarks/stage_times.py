"""Per-stage wall times of a study (default: the quickstart), measured in one fresh run.

    python benchmarks/stage_times.py [CONFIG] [--set key=value ...]

Runs the config into a temporary output root (so nothing is reused), then prints each stage's
seconds, its share of the total, and a JSON line with the same numbers for docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from study import console
from study.config_load import load_config
from study.frame.runner import run_study
from study import storage


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="configs/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    console.configure()  # the stages' progress lines, as dejavu run shows them
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(args.config, args.overrides, out)
        start = time.perf_counter()
        ctx = run_study(cfg)
        total = time.perf_counter() - start
        timings = storage.read_json(storage.join(ctx.run_dir, "timings.json"))
        headline = storage.read_json(ctx.stage_dir("report", "report.json"))["headline"]
    print(f"\n{'stage':<10}{'seconds':>10}{'share':>8}")
    for stage in timings:  # in stage order
        print(f"{stage:<10}{timings[stage]:>10.1f}{timings[stage] / total:>8.0%}")
    print(f"{'total':<10}{total:>10.1f}  (including Ray start-up)")
    print(json.dumps({"config": args.config, "total_s": round(total, 1),
                      "stages_s": {s: round(t, 1) for s, t in timings.items()}, "headline": headline}))


if __name__ == "__main__":
    main()
