"""Stage ``splits``: the keyed-hash plan, streamed (docs/concepts/index.md, splits).

A record's split is a per-record function of its id and the seed, so Ray Data tasks plan each
batch and write the manifest as Parquet, partitioned by split::

    splits/members/split=<name>/*.parquet    (id, label)
    splits/manifest.json                      seed, fractions, counts, digest, num_classes

Counts, quarantine reasons and the order-free digest are totalled per batch in tasks
(``study.frame.tally``); the driver sees only the totals. One row per record with one split each makes the splits disjoint exactly when no
id repeats: the data stage guarantees that for every input (it quarantines repeated ids; the
generator's are unique by construction), so the manifest is disjoint by construction. Before any
model trains, ``verify_splits`` recomputes the digest from the member files.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import ray

from study import storage
from study.core.split_plan import QUARANTINED, SplitPlan
from study.core.splits import UNASSIGNED, digest_terms, plan_digest
from study.data import records
from study.data.loading import MEMBERS, members_dir, split_uri
from study.errors import StudyError
from study.stages import splits_balance as balance
from study.stages import splits_near_dups as near_dups
from study.frame.context import RunContext
from study.frame.tally import COUNT, tally

TASK_CPUS = 0.25  # planning is light; leave room for other work on a small machine


def plan_batch(batch: pa.Table, plan: SplitPlan) -> pa.Table:
    """Records (id and the plan's columns) -> manifest rows (id, split, label, reason): label -1
    where missing; reason null but for records the plan quarantines."""
    n = batch.num_rows
    label = batch.column("label") if "label" in batch.column_names else pa.nulls(n, pa.int32())
    split, reasons = plan.assign_with_reasons(batch)
    return pa.table({
        "id": batch.column("id").cast(pa.string()),
        "split": pa.array(split.astype(str), pa.string()),
        "label": pc.fill_null(label.cast(pa.int32()), -1),
        "reason": pa.array(reasons, pa.string()),
    })


def digest_batch(batch: pa.Table) -> pa.Table:
    """Manifest rows -> (split, reason, label, lo, hi): the per-record terms of the plan digest."""
    lo, hi = digest_terms(batch.column("id").to_pylist())
    reason = batch.column("reason") if "reason" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return pa.table({"split": batch.column("split"), "reason": pc.fill_null(reason.cast(pa.string()), ""),
                     "label": batch.column("label"), "lo": lo, "hi": hi})


def _read(uri: str, **kwargs) -> "ray.data.Dataset":
    fs, paths = storage.arrow_fs_paths([u for u in storage.list_files(uri) if u.endswith(".parquet")])
    return ray.data.read_parquet(paths, filesystem=fs, **kwargs)


def plan_aggregates(members: "ray.data.Dataset") -> dict[str, dict]:
    """{split: {"count", "lo", "hi", "max_label", "reasons": {reason: n}}} of a manifest dataset
    (columns id, split, label, reason), totalled per (split, reason) by ``tally``; the sums wrap
    mod 2^64 in the digest."""
    out: dict[str, dict] = {}
    for (split, reason), t in tally(members, digest_batch, ["split", "reason"], sums=["lo", "hi"], maxes=["label"],
                                    num_cpus=TASK_CPUS).items():
        a = out.setdefault(split, {"count": 0, "lo": 0, "hi": 0, "max_label": -1, "reasons": {}})
        a["count"] += t[COUNT]
        a["lo"], a["hi"] = a["lo"] + t["lo"], a["hi"] + t["hi"]
        a["max_label"] = max(a["max_label"], t["label"])
        if reason:
            a["reasons"][reason] = t[COUNT]
    return out


def write_members(ctx: RunContext, plan: SplitPlan) -> None:
    """Plan every record in Ray Data tasks and write the member files, partitioned by split."""
    columns = list(dict.fromkeys(["id", *plan.columns()]))
    fs, paths = storage.arrow_fs_paths(records.shard_uris(ctx.data_root))
    planned = ray.data.read_parquet(paths, filesystem=fs).select_columns(columns).map_batches(
        partial(plan_batch, plan=plan), batch_format="pyarrow", num_cpus=TASK_CPUS)
    out_fs, (out_path,) = storage.arrow_fs_paths([members_dir(ctx.splits_dir)])
    planned.write_parquet(out_path, filesystem=out_fs, partition_cols=["split"])


@ray.remote(num_cpus=TASK_CPUS)
def _normalise(uri: str, shards: list[str], out: str, missing: str):
    """The user's splits read, checked and written in a task (the driver holds their counts only);
    a user's mistake comes back as (error class name, message) to be raised in the driver."""
    from study.data.assignments import normalise

    try:
        return normalise(uri, shards, out, missing)
    except StudyError as e:
        return {"error": (type(e).__name__, str(e))}


def given_splits(ctx: RunContext) -> dict:
    """Read and check ``splits.assignments``; what it lists, what the data lacks, its fingerprint."""
    from study import errors
    from study.data.assignments import assigned_uri, missing_uri, version

    uri = ctx.cfg.splits.assignments
    fingerprint = version(uri)
    out = ray.get(_normalise.remote(uri, records.shard_uris(ctx.data_root), assigned_uri(ctx.splits_dir),
                                    missing_uri(ctx.splits_dir)))
    if "error" in out:
        name, message = out["error"]
        raise getattr(errors, name, StudyError)(message)
    missing = sum(out["missing"].values())
    ctx.log("splits", f"splits from {uri}: " + ", ".join(f"{s} {n}" for s, n in out["listed"].items())
            + (f"; {missing} listed id(s) not in the data ({missing_uri(ctx.splits_dir)})" if missing else ""))
    return {"uri": uri, "fingerprint": fingerprint, **out, "missing_ids": missing_uri(ctx.splits_dir)}


def _check_given(given: dict, counts: dict, quarantined: dict, least: int, needed: list[str]) -> None:
    """Stop when the user's splits leave a split the study needs too small to measure."""
    for name in needed:
        if name not in given["listed"]:
            raise StudyError(f"splits.assignments: lists no {name} records ({given['uri']}); this study needs "
                             f"{', '.join(needed)} (model A's training records are the target split, model B's "
                             "the reference split)")
    for name, listed in given["listed"].items():
        if counts.get(name, 0) < least:
            raise StudyError(f"split '{name}' keeps {counts.get(name, 0)} of the {listed} records "
                             f"{given['uri']} lists ({given['missing'][name]} not in the data, the rest "
                             f"quarantined: {quarantined or 'none'}); splits.min_assigned is {least}")


def run_splits(ctx: RunContext) -> dict:
    cfg = ctx.cfg.splits
    storage.remove(ctx.splits_dir)  # no stray member files from an earlier plan
    given = given_splits(ctx) if cfg.assignments else None
    plan = ctx.split_plan(thresholds={})
    per_class = None
    if cfg.per_class:  # the per-class thresholds first: the plan below applies them
        thresholds, taken = balance.compute_thresholds(ctx.data_root, plan)
        plan = dataclasses.replace(plan, thresholds=thresholds)
        per_class = balance.manifest_entry(cfg.per_class, thresholds, taken)
        short = {s: len(c) for s, c in per_class["short"].items() if c}
        ctx.log("splits", f"per-class quotas {dict(cfg.per_class)} over {len(thresholds)} classes"
                          + (f"; classes short of their quota: {short}" if short else ""))
    write_members(ctx, plan)
    near = None
    if cfg.near_duplicates.detect:
        near = near_dups.summarise(near_dups.find_pairs(ctx.data_root, plan, cfg.near_duplicates.max_distance),
                                   cfg.near_duplicates)
        ctx.log("splits", f"{near['pairs']} near-duplicate pairs across splits {near['by_splits']}")
        if near["dropped"]:  # quarantine the attacked records among them, and plan again
            plan = dataclasses.replace(plan, excluded=frozenset(near["dropped"]))
            storage.remove(members_dir(ctx.splits_dir))
            write_members(ctx, plan)
    ctx.log("splits", "wrote the manifest; counting and checking it")
    agg = plan_aggregates(read_members(ctx.splits_dir))
    names = list(cfg.per_class) if cfg.per_class else list(cfg.fractions)
    counts = {name: agg.get(name, {}).get("count", 0) for name in names}
    quarantined = dict(sorted(agg.get(QUARANTINED, {}).get("reasons", {}).items()))
    if given:
        from study.frame.kinds import get_kind

        needed = ["target", "reference"] + (["public"] if "public" in get_kind(ctx.cfg.study).needs else [])
        _check_given(given, counts, quarantined, cfg.min_assigned, needed)
    for name in [] if given else names:
        want = cfg.per_class.get(name) or cfg.fractions.get(name, 0)
        if want > 0 and counts[name] == 0:
            total = sum(a["count"] for a in agg.values())
            why = f" ({sum(quarantined.values())} quarantined: {quarantined})" if quarantined else ""
            what = f"{want} per class" if cfg.per_class else f"fraction {want}"
            raise StudyError(f"split '{name}' is empty: {total} records{why} are too few for {what}")
    max_label = max((a["max_label"] for s, a in agg.items() if s != QUARANTINED), default=-1)
    manifest = {
        "seed": cfg.seed,
        "fractions": {} if given else dict(cfg.fractions),  # the user's splits: no fractions
        **({"per_class": per_class} if per_class else {}),
        **({"near_duplicates": near} if near else {}),
        **({"assignments": given} if given else {}),
        "counts": counts,
        "unassigned": agg.get(UNASSIGNED, {}).get("count", 0),
        "quarantined": quarantined,
        "num_classes": max_label + 1 if max_label >= 0 else 0,
        "members": MEMBERS,
        "digest": _digest(cfg.seed, agg),
    }
    storage.write_json(storage.join(ctx.splits_dir, "manifest.json"), manifest)
    ctx.log("splits", "  ".join(f"{k}={v}" for k, v in counts.items()) + f"  (unassigned={manifest['unassigned']})")
    if quarantined:
        ctx.log("splits", f"quarantined {sum(quarantined.values())} records their split cannot use: "
                          + ", ".join(f"{n} {r}" for r, n in quarantined.items())
                          + f" (ids in {split_uri(ctx.splits_dir, QUARANTINED)})")
    return manifest


def read_members(splits_dir: str) -> "ray.data.Dataset":
    """The manifest as a dataset of (id, split, label); the split comes from the partition path."""
    return _read(members_dir(splits_dir), partitioning=ray.data.datasource.Partitioning("hive"))


def _digest(seed: int, agg: Mapping[str, dict]) -> str:
    return plan_digest(seed, {s: (a["count"], a["lo"], a["hi"]) for s, a in agg.items()
                              if s not in (UNASSIGNED, QUARANTINED)})


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

