"""What the embed stage will embed and skip, counted by Ray Data tasks (nothing grows
with N on the driver).

A kind's batch planner (``plan_crops``, ``plan_captions``) decides per record, from metadata only,
whether an attacked record can be tested and why not; here every batch is planned in a task and
the counts are totalled per batch there and added up as they stream back (``study.frame.tally``),
so the driver holds a few rows per set and reason whatever the number of records.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import pyarrow as pa
import ray

from study import storage
from study.core.split_plan import SplitPlan
from study.data import records
from study.frame.tally import tally

EMBEDDED = "embedded"
PUBLIC = "public"


def _count_batch(batch: pa.Table, planner: Callable, sets: tuple[str, ...], plan: SplitPlan) -> pa.Table:
    split_of = plan.assign(batch)
    summary = planner(batch, split_of, sets)
    rows = [(PUBLIC, EMBEDDED, int((split_of == PUBLIC).sum()))]
    for s, c in summary.items():
        rows.append((s, EMBEDDED, c["embedded"]))
        rows.extend((s, reason, n) for reason, n in c["skipped"].items())
    names, reasons, counts = zip(*rows)
    return pa.table({"set": list(names), "reason": list(reasons), "n": pa.array(counts, pa.int64())})


def count_plan(data_root: str, columns: list[str], planner: Callable, sets: tuple[str, ...],
               plan: SplitPlan) -> tuple[int, dict]:
    """(public records, {set: {"embedded": n, "skipped": {reason: n}}}) over every record.

    ``planner(batch, split_of, sets)`` returns that summary for one batch of records; quarantined
    records are in no set (the splits stage counts them)."""
    columns = list(dict.fromkeys([*columns, *plan.columns()]))
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns(columns)
    counted = tally(ds, partial(_count_batch, planner=planner, sets=sets, plan=plan), ["set", "reason"], sums=["n"])
    plan = {s: {EMBEDDED: 0, "skipped": {}} for s in sets}
    public = 0
    for (name, reason), t in counted.items():
        if name == PUBLIC:
            public += t["n"]
        elif reason == EMBEDDED:
            plan[name][EMBEDDED] += t["n"]
        elif t["n"]:
            plan[name]["skipped"][reason] = t["n"]
    for c in plan.values():
        c["skipped"] = dict(sorted(c["skipped"].items()))
    return public, plan
