"""Peak memory and time of the SSL déjà vu population test (``metrics.dejavu_test``) as n grows.

    python benchmarks/stats_bench.py [--sizes 10000 100000 1000000] [--bootstrap 1000] [--permutations 2000]

Two seeded synthetic sides of n records each (target 60 % right, reference 45 %, confidences from
21 levels, so ties are common), tested at the study's default quantiles. Draws default to
``MeasureConfig``'s. Wall and CPU time are both printed: on a shared machine CPU time is the
steadier figure. Peak memory is tracemalloc's (numpy reports its buffers to it) over the call
alone, beside the sides' own arrays; the draws run in chunks of ``metrics.CHUNK_ELEMENTS``, so the
peak should grow like n, not like draws × n. The last line compares the two largest sizes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc

import numpy as np

from study.config import MeasureConfig
from study.core import metrics


def synthetic_side(rng: np.random.Generator, n: int, prefix: str) -> metrics.Side:
    levels = np.linspace(-3.0, 0.0, 21)  # confidence = -entropy takes few distinct values
    return metrics.Side(
        ids=np.char.add(prefix, np.arange(n).astype(str)).astype(object),
        target_correct=rng.random(n) < 0.6,
        target_confidence=levels[rng.integers(0, len(levels), n)],
        reference_correct=rng.random(n) < 0.45,
        reference_confidence=levels[rng.integers(0, len(levels), n)],
    )


def measure(n: int, bootstrap: int, permutations: int, cfg: MeasureConfig) -> dict:
    rng = np.random.default_rng(n)
    sides = [synthetic_side(rng, n, "a"), synthetic_side(rng, n, "b")]
    inputs = sum(a.nbytes for s in sides for a in (s.target_correct, s.target_confidence,
                                                    s.reference_correct, s.reference_confidence))
    tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    out = metrics.dejavu_test(sides, cfg.quantiles, bootstrap, permutations, cfg.confidence_level, cfg.seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gap = out["by_q"][-1]["gap"]
    return {"n_per_side": n, "bootstrap": bootstrap, "permutations": permutations, "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "peak_mib": round(peak / 2**20, 1), "inputs_mib": round(inputs / 2**20, 1),
            "gap_q1": round(gap["value"], 4), "gap_ci": [round(v, 4) for v in gap["ci"]], "p": gap["p_value"]}


def main(argv: list[str] | None = None) -> int:
    cfg = MeasureConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--bootstrap", type=int, default=cfg.bootstrap)
    parser.add_argument("--permutations", type=int, default=cfg.permutations)
    args = parser.parse_args(argv)
    print(f"dejavu_test, 2 sides, qs={list(cfg.quantiles)}, chunk={metrics.CHUNK_ELEMENTS} elements, "
          f"bootstrap={args.bootstrap}, permutations={args.permutations}")
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.bootstrap, args.permutations, cfg))
        r = rows[-1]
        print(f"n={n:>9,} per side: {r['seconds']:7.2f} s wall, {r['cpu_seconds']:7.2f} s CPU, peak {r['peak_mib']:7.1f} MiB "
              f"(inputs {r['inputs_mib']:.1f} MiB)  gap@q=1 {r['gap_q1']:+.4f} {r['gap_ci']} p={r['p']:.4g}")
        print(json.dumps(r))
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        print(f"peak memory ratio n={b['n_per_side']:,} / n={a['n_per_side']:,}: {b['peak_mib'] / a['peak_mib']:.2f} "
              f"(records x{b['n_per_side'] / a['n_per_side']:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
