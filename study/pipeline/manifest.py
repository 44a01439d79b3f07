"""Stage ``splits``: the keyed-hash plan, streamed (DESIGN §3).

A record's split is a per-record function of its id and the seed, so Ray Data tasks plan each
batch and write the manifest as Parquet, partitioned by split::

    splits/members/split=<name>/*.parquet    (id, label)
    splits/manifest.json                      seed, fractions, counts, digest, num_classes

Counts, the order-free digest and the uniqueness of ids come from Ray Data aggregates; the driver
sees only those aggregates. One row per record with one split each makes the splits disjoint
exactly when no id repeats, so the uniqueness check is the disjointness check. Before any model
trains, ``verify_splits`` recomputes the digest from the member files.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.aggregate import Count, Max, Sum

from study import storage
from study.core.splits import UNASSIGNED, assign_splits, digest_terms, plan_digest
from study.data import records
from study.data.loading import MEMBERS, members_dir
from study.errors import DataError, StudyError
from study.pipeline.context import RunContext

TASK_CPUS = 0.25  # planning is light; leave room for other work on a small machine


def plan_batch(batch: pa.Table, fractions: Mapping[str, float], seed: int) -> pa.Table:
    """Records (id[, label]) -> manifest rows (id, split, label; label -1 where missing)."""
    n = batch.num_rows
    label = batch.column("label") if "label" in batch.column_names else pa.nulls(n, pa.int32())
    split = assign_splits(batch.column("id").to_pylist(), fractions, seed)
    return pa.table({
        "id": batch.column("id").cast(pa.string()),
        "split": pa.array(split.astype(str), pa.string()),
        "label": pc.fill_null(label.cast(pa.int32()), -1),
    })


def digest_batch(batch: pa.Table) -> pa.Table:
    """Manifest rows -> (split, label, lo, hi): the per-record terms of the plan digest."""
    lo, hi = digest_terms(batch.column("id").to_pylist())
    return pa.table({"split": batch.column("split"), "label": batch.column("label"), "lo": lo, "hi": hi})


def _keep_repeated(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.greater(batch.column("n"), 1))


def _read(uri: str, **kwargs) -> "ray.data.Dataset":
    fs, paths = storage.arrow_fs_paths([u for u in storage.list_files(uri) if u.endswith(".parquet")])
    return ray.data.read_parquet(paths, filesystem=fs, **kwargs)


def plan_aggregates(members: "ray.data.Dataset") -> dict[str, dict]:
    """{split: {"count", "lo", "hi", "max_label"}} of a manifest dataset (columns id, split, label)."""
    rows = (
        members.map_batches(digest_batch, batch_format="pyarrow", num_cpus=TASK_CPUS)
        .groupby("split")
        .aggregate(Count(alias_name="count"), Sum("lo", alias_name="lo"), Sum("hi", alias_name="hi"),
                   Max("label", alias_name="max_label"))
        .take_all()
    )
    return {r["split"]: {k: int(r[k]) for k in ("count", "lo", "hi", "max_label")} for r in rows}


def repeated_ids(members: "ray.data.Dataset", limit: int = 5) -> list[str]:
    """Up to ``limit`` ids that occur more than once (a groupby aggregate, not a driver-side set)."""
    counts = members.select_columns(["id"]).groupby("id").aggregate(Count(alias_name="n"))
    return sorted(r["id"] for r in counts.map_batches(_keep_repeated, batch_format="pyarrow").take(limit))


def run_splits(ctx: RunContext) -> dict:
    cfg = ctx.cfg.splits
    columns = [c for c in ("id", "label") if c in records.dataset(ctx.data_root).schema.names]
    out = members_dir(ctx.splits_dir)
    storage.remove(ctx.splits_dir)  # no stray member files from an earlier plan
    fs, paths = storage.arrow_fs_paths(records.shard_uris(ctx.data_root))
    planned = ray.data.read_parquet(paths, filesystem=fs).select_columns(columns).map_batches(
        partial(plan_batch, fractions=dict(cfg.fractions), seed=cfg.seed), batch_format="pyarrow", num_cpus=TASK_CPUS)
    out_fs, (out_path,) = storage.arrow_fs_paths([out])
    planned.write_parquet(out_path, filesystem=out_fs, partition_cols=["split"])
    ctx.log("splits", "wrote the manifest; counting and checking it")
    members = read_members(ctx.splits_dir)
    repeated = repeated_ids(members)
    if repeated:
        raise DataError(f"record ids must be unique; duplicated: {repeated}")
    agg = plan_aggregates(members)
    counts = {name: agg.get(name, {}).get("count", 0) for name in cfg.fractions}
    for name, frac in cfg.fractions.items():
        if frac > 0 and counts[name] == 0:
            total = sum(a["count"] for a in agg.values())
            raise StudyError(f"split '{name}' is empty: {total} records are too few for fraction {frac}")
    max_label = max((a["max_label"] for a in agg.values()), default=-1)
    manifest = {
        "seed": cfg.seed,
        "fractions": dict(cfg.fractions),
        "counts": counts,
        "unassigned": agg.get(UNASSIGNED, {}).get("count", 0),
        "num_classes": max_label + 1 if max_label >= 0 else 0,
        "members": MEMBERS,
        "digest": _digest(cfg.seed, agg),
    }
    storage.write_json(storage.join(ctx.splits_dir, "manifest.json"), manifest)
    ctx.log("splits", "  ".join(f"{k}={v}" for k, v in counts.items()) + f"  (unassigned={manifest['unassigned']})")
    return manifest


def read_members(splits_dir: str) -> "ray.data.Dataset":
    """The manifest as a dataset of (id, split, label); the split comes from the partition path."""
    return _read(members_dir(splits_dir), partitioning=ray.data.datasource.Partitioning("hive"))


def _digest(seed: int, agg: Mapping[str, dict]) -> str:
    return plan_digest(seed, {s: (a["count"], a["lo"], a["hi"]) for s, a in agg.items() if s != UNASSIGNED})


def verify_splits(splits_dir: str) -> dict:
    """Recompute the digest from the member files: stop with a clear message unless they match the
    manifest (uniqueness, checked when the plan was written, holds for the same content)."""
    manifest_uri = storage.join(splits_dir, "manifest.json")
    if not storage.exists(manifest_uri):
        raise StudyError(f"no split manifest under {splits_dir}; rerun the study to plan the splits")
    manifest = storage.read_json(manifest_uri)
    if _digest(manifest["seed"], plan_aggregates(read_members(splits_dir))) != manifest["digest"]:
        raise StudyError(f"split member files under {splits_dir} do not match their manifest digest")
    return manifest

