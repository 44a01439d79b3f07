"""Per-class quotas for the splits stage (``splits.per_class``; the rule is ``core.balance``).

One Ray Data pass: tasks turn each batch of records into (label, hash draw, which quota splits can
use the record); a groupby on the label hands each class's rows to one task, which computes the
class's thresholds (``core.balance.class_thresholds``). The driver receives one row per class and
split. Thresholds go into the manifest, so every later stage applies the same rule.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pyarrow as pa
import ray

from study import storage
from study.core.balance import class_thresholds
from study.core.split_plan import SplitPlan
from study.data import records

TASK_CPUS = 0.25


def group_partitions() -> int:
    """Partitions of a ``map_groups`` shuffle: one per CPU. Ray's default (200) costs seconds of
    task overhead per pass on a small cluster and buys nothing for groups of this size."""
    return max(2, int(ray.cluster_resources().get("CPU", 2)))


def _features_batch(batch: pa.Table, plan: SplitPlan) -> pa.Table:
    """Records -> (label, u, usable_<split>...) of the records a quota could take."""
    u, labels, eligible, reasons = plan.features(batch)
    keep = np.array([r is None for r in reasons], dtype=bool)
    cols = {"label": pa.array(labels, pa.int64()).filter(pa.array(keep)), "u": pa.array(u[keep], pa.float64())}
    cols.update({f"usable_{s}": pa.array(eligible[s][keep]) for s in plan.quotas})
    return pa.table(cols)


def _class_batch(group: pa.Table, quotas: dict) -> pa.Table:
    """One class's rows -> one row per quota split: (label, split, threshold, taken)."""
    label = group.column("label")[0].as_py()
    eligible = {s: group.column(f"usable_{s}").to_numpy(zero_copy_only=False) for s in quotas}
    thresholds, taken = class_thresholds(group.column("u").to_numpy(), eligible, quotas)
    return pa.table({"label": [label] * len(quotas), "split": list(quotas),
                     "threshold": [thresholds[s] for s in quotas], "taken": [taken[s] for s in quotas]})


def compute_thresholds(data_root: str, plan: SplitPlan) -> tuple[dict, dict]:
    """({label: {split: threshold}}, {split: {label: records taken}}) over every record."""
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    rows = (
        ray.data.read_parquet(paths, filesystem=fs)
        .select_columns(list(dict.fromkeys(["id", *plan.columns()])))
        .map_batches(partial(_features_batch, plan=plan), batch_format="pyarrow", num_cpus=TASK_CPUS)
        .groupby("label", num_partitions=group_partitions())
        .map_groups(partial(_class_batch, quotas=dict(plan.quotas)), batch_format="pyarrow", num_cpus=TASK_CPUS)
        .take_all()
    )
    thresholds: dict = {}
    taken: dict = {s: {} for s in plan.quotas}
    for r in rows:
        thresholds.setdefault(int(r["label"]), {})[r["split"]] = float(r["threshold"])
        taken[r["split"]][int(r["label"])] = int(r["taken"])
    return thresholds, taken


def manifest_entry(quotas: dict, thresholds: dict, taken: dict) -> dict:
    """What the manifest keeps: the quotas, the thresholds (null for "all of them") and, per split,
    the classes that fell short of their quota with what they got."""
    return {
        "quotas": dict(quotas),
        "thresholds": {str(c): {s: (None if math.isinf(t) else t) for s, t in ts.items()}
                       for c, ts in sorted(thresholds.items())},
        "short": {s: {str(c): n for c, n in sorted(taken[s].items()) if n < quotas[s]} for s in quotas},
    }


