"""Repeated record ids, found by a Ray Data aggregate and quarantined (DESIGN §3: splits are
disjoint exactly when no id repeats).

Which of two records with one id is the right one cannot be known, so every copy goes: the
written record shards that hold one are rewritten without it, by one task per shard, and the
copies are listed in the quarantine with reason ``duplicate_id``. The driver holds the repeated
ids only (none, for a sound input).
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.aggregate import Count

from study import storage
from study.core.quality import DUPLICATE_ID
from study.data import records
from study.pipeline.record_sink import QUARANTINE_SCHEMA

TASK_CPUS = 0.25


def _keep_repeated(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.greater(batch.column("n"), 1))


def repeated(ds: "ray.data.Dataset", limit: int | None = None) -> list[str]:
    """Ids that occur more than once in a dataset with an ``id`` column (up to ``limit``), sorted."""
    counts = ds.select_columns(["id"]).groupby("id").aggregate(Count(alias_name="n"))
    found = counts.map_batches(_keep_repeated, batch_format="pyarrow")
    rows = found.take_all() if limit is None else found.take(limit)
    return sorted(r["id"] for r in rows)


def _read_ids(root: str) -> "ray.data.Dataset":
    fs, paths = storage.arrow_fs_paths(records.shard_uris(root))
    return ray.data.read_parquet(paths, filesystem=fs).select_columns(["id"])


def repeated_ids(root: str) -> list[str]:
    """Ids repeated across the record shards under ``root`` (only the id column is read)."""
    return repeated(_read_ids(root))


def _drop_from_shard(uri: str, ids: list[str], quarantine: str) -> int:
    with storage.open_read(uri) as fh:
        table = pq.read_table(fh)
    hit = pc.is_in(table.column("id"), value_set=pa.array(ids, pa.string()))
    n = int(pc.sum(hit).as_py() or 0)
    if n:
        stem = uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        held = pa.table({"id": table.filter(hit).column("id"), "reason": pa.array([DUPLICATE_ID] * n, pa.string())},
                        schema=QUARANTINE_SCHEMA)
        with storage.open_atomic(storage.join(quarantine, f"dup-{stem}.parquet"), "wb") as fh:
            pq.write_table(held, fh)
        kept = table.filter(pc.invert(hit))
        if kept.num_rows:
            with storage.open_atomic(uri, "wb") as fh:
                pq.write_table(kept, fh)
        else:
            storage.remove(uri)
    return n


def drop_repeated(root: str, quarantine: str) -> int:
    """Quarantine every record whose id repeats under ``root`` (shards rewritten in place); returns
    how many records went."""
    ids = repeated_ids(root)
    if not ids:
        return 0
    task = ray.remote(_drop_from_shard).options(num_cpus=TASK_CPUS)
    ids_ref = ray.put(ids)
    return sum(ray.get([task.remote(uri, ids_ref, quarantine) for uri in records.shard_uris(root)]))
