"""Grouped totals over a Ray Data dataset, without a shuffle.

Each task groups its own batch with pyarrow (a few rows per batch); the driver streams those rows
and adds them up as they come, so it holds one row per group whatever the dataset's size. Ray
Data's ``groupby().aggregate()`` gives the same totals through a hash shuffle whose fixed cost
(its aggregator actors: seconds per pipeline on a small cluster) dominated a small study's
counting steps; totals this small need no shuffle.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import pyarrow as pa
import ray

COUNT = "count"


def _grouped(batch: pa.Table, fn: Callable[[pa.Table], pa.Table], keys: Sequence[str], sums: Sequence[str],
             maxes: Sequence[str]) -> pa.Table:
    table = fn(batch)
    aggs = [([], "count_all"), *((c, "sum") for c in sums), *((c, "max") for c in maxes)]
    # One thread: pyarrow's grouping numbers its threads up to the CPU pool's size when it first
    # ran in the process, and Ray Data's Parquet reader enlarges that pool (pa.set_cpu_count) in
    # the same worker, so a threaded group-by in a reused worker can fail with "thread index N is
    # out of range [0, N)". A batch's few rows need no threads.
    grouped = table.group_by(list(keys), use_threads=False).aggregate(aggs)
    names = [*keys, "count_all", *(f"{c}_sum" for c in sums), *(f"{c}_max" for c in maxes)]
    return grouped.select(names).rename_columns([*keys, COUNT, *sums, *maxes])


def tally(ds: "ray.data.Dataset", fn: Callable[[pa.Table], pa.Table], keys: Sequence[str],
          sums: Sequence[str] = (), maxes: Sequence[str] = (), num_cpus: float = 0.25) -> dict[tuple, dict]:
    """{key values: {"count": rows, sum column: total, max column: largest}} over the rows that
    ``fn`` makes of each batch of ``ds``; integer columns add up exactly (Python ints)."""
    partials = ds.map_batches(partial(_grouped, fn=fn, keys=tuple(keys), sums=tuple(sums), maxes=tuple(maxes)),
                              batch_format="pyarrow", num_cpus=num_cpus)
    out: dict[tuple, dict] = {}
    for block in partials.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in block.to_pylist():
            key = tuple(row[k] for k in keys)
            total = out.get(key)
            if total is None:
                out[key] = {c: row[c] for c in (COUNT, *sums, *maxes)}
                continue
            for c in (COUNT, *sums):
                total[c] += row[c]
            for c in maxes:
                total[c] = max(total[c], row[c])
    return out
