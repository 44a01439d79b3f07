"""Repeated record ids, found from the id hashes the record sink left in the object store, and
quarantined (splits are disjoint exactly when no id repeats).

One task gathers every write task's file of 64-bit id hashes (``core.splits.id_hash64``; 8 bytes
a record, in files beside the quarantine, never on the driver) and returns the hashes that occur more than
once: none, for a sound input. Two different ids share a 64-bit hash with probability about
N^2 / 2^65 (1e-4 at 50 million records); such a pair would be quarantined as repeated too.

Which of two records with one id is the right one cannot be known, so every copy goes: the
written record shards that hold one are rewritten without it, one task per shard, and the copies
are listed in the quarantine with reason ``duplicate_id``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from study import storage
from study.core.quality import DUPLICATE_ID
from study.core.splits import id_hash64
from study.data import records
from study.data.record_sink import QUARANTINE_SCHEMA

TASK_CPUS = 0.25


def _repeats(uris: list[str]) -> np.ndarray:
    arrays = []
    for uri in uris:
        with storage.open_read(uri) as fh:
            arrays.append(np.load(fh))
    values, counts = np.unique(np.concatenate(arrays) if arrays else np.zeros(0, np.uint64), return_counts=True)
    for uri in uris:
        storage.remove(uri)
    return values[counts > 1]


def repeated_hashes(uris: list[str]) -> np.ndarray:
    """The id hashes that occur more than once across the hash files (which it then removes)."""
    if not uris:
        return np.zeros(0, np.uint64)
    return ray.get(ray.remote(_repeats).options(num_cpus=TASK_CPUS).remote(list(uris)))


def _drop_from_shard(uri: str, repeated: np.ndarray, quarantine: str) -> int:
    with storage.open_read(uri) as fh:
        table = pq.read_table(fh)
    hit = pa.array(np.isin(id_hash64(table.column("id").to_pylist()), repeated))
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


def drop_repeated(root: str, quarantine: str, repeated: np.ndarray) -> int:
    """Quarantine every record under ``root`` whose id hash is in ``repeated`` (shards rewritten in
    place); returns how many records went."""
    if not len(repeated):
        return 0
    task = ray.remote(_drop_from_shard).options(num_cpus=TASK_CPUS)
    ref = ray.put(np.asarray(repeated, np.uint64))
    return sum(ray.get([task.remote(uri, ref, quarantine) for uri in records.shard_uris(root)]))
