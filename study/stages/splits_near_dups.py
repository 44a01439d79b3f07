"""Near-duplicate images across splits (``splits.near_duplicates``; the maths is ``core.phash``).

One Ray Data pass after the plan: tasks decode each planned record's image, hash it and emit one
row per band of its hash; a groupby on (band, value) hands each group of records sharing a band
to one task, which keeps the cross-split pairs within ``max_distance`` (each pair only in the
first band the two agree on, so it is reported once). The driver receives the pairs only. With
``drop``, the attacked sets' records in a pair are quarantined (``near_duplicate``) and the plan
is written again.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa
import ray

from study import storage
from study.config import NearDuplicateConfig
from study.core.phash import band_keys, close_pairs, dhash, first_band
from study.core.split_plan import QUARANTINED, SplitPlan
from study.core.splits import UNASSIGNED
from study.data import records
from study.stages.splits_balance import group_partitions

TASK_CPUS = 0.5
ATTACKED = ("target", "reference", "holdout")


def _hash_batch(batch: pa.Table, plan: SplitPlan, max_distance: int) -> pa.Table:
    """Records -> (band, value, id, split, hash) per band of each planned record's image hash."""
    split = plan.assign(batch)
    rows = {"band": [], "value": [], "id": [], "split": [], "hash": []}
    for i, (rid, data) in enumerate(zip(batch.column("id").to_pylist(), batch.column("image").to_pylist())):
        if split[i] in (UNASSIGNED, QUARANTINED):
            continue
        h = dhash(records.decode_image(data))
        for band, value in band_keys(h, max_distance):
            rows["band"].append(band)
            rows["value"].append(value)
            rows["id"].append(rid)
            rows["split"].append(str(split[i]))
            rows["hash"].append(h)
    return pa.table({"band": pa.array(rows["band"], pa.int8()), "value": pa.array(rows["value"], pa.uint64()),
                     "id": pa.array(rows["id"], pa.string()), "split": pa.array(rows["split"], pa.string()),
                     "hash": pa.array(rows["hash"], pa.uint64())})


PAIR_SCHEMA = pa.schema([("id_a", pa.string()), ("split_a", pa.string()), ("id_b", pa.string()),
                         ("split_b", pa.string()), ("distance", pa.int32())])


def _pairs_batch(group: pa.Table, max_distance: int) -> pa.Table:
    """One band group -> its cross-split pairs within ``max_distance`` first found in this band."""
    out = {n: [] for n in PAIR_SCHEMA.names}
    if group.num_rows > 1:
        band = group.column("band")[0].as_py()
        ids, splits = group.column("id").to_pylist(), np.array(group.column("split").to_pylist(), dtype=object)
        hashes = group.column("hash").to_numpy()
        for i, j, d in close_pairs(hashes, splits, max_distance):
            if first_band(int(hashes[i]), int(hashes[j]), max_distance) != band:
                continue
            (a, b) = (i, j) if ids[i] < ids[j] else (j, i)
            for name, value in zip(PAIR_SCHEMA.names, (ids[a], splits[a], ids[b], splits[b], d)):
                out[name].append(value)
    return pa.table(out, schema=PAIR_SCHEMA)


def find_pairs(data_root: str, plan: SplitPlan, max_distance: int) -> list[dict]:
    """Every pair of planned records in different splits whose image hashes are within distance."""
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    pairs = (
        ray.data.read_parquet(paths, filesystem=fs)
        .select_columns(list(dict.fromkeys(["id", "image", *plan.columns()])))
        .map_batches(partial(_hash_batch, plan=plan, max_distance=max_distance), batch_format="pyarrow",
                     num_cpus=TASK_CPUS)
        .groupby(["band", "value"], num_partitions=group_partitions())
        .map_groups(partial(_pairs_batch, max_distance=max_distance), batch_format="pyarrow", num_cpus=TASK_CPUS)
        .take_all()
    )
    return sorted(pairs, key=lambda p: (p["distance"], p["id_a"], p["id_b"]))


def summarise(pairs: list[dict], cfg: NearDuplicateConfig) -> dict:
    """The manifest's entry: counts per split pair, examples, and the ids ``drop`` quarantines."""
    by_splits: dict[str, int] = {}
    for p in pairs:
        key = "/".join(sorted((p["split_a"], p["split_b"])))
        by_splits[key] = by_splits.get(key, 0) + 1
    attacked = sorted({p[f"id_{s}"] for p in pairs for s in "ab" if p[f"split_{s}"] in ATTACKED})
    return {
        "max_distance": cfg.max_distance,
        "pairs": len(pairs),
        "by_splits": dict(sorted(by_splits.items())),
        "attacked_records": len(attacked),
        "examples": [{k: p[k] for k in PAIR_SCHEMA.names} for p in pairs[: cfg.examples]],
        "dropped": attacked if cfg.drop else [],
    }
