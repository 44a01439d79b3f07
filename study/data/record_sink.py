"""Where an ingest's records go: record shards for the usable ones, the quarantine for the rest.

Readers (``study.data.laion``, ``study.data.coco``, record shards) yield record-schema columns plus
a read status per record (``core.quality``: ``ok`` or a read reason). ``RecordSink``'s write tasks
split each block by status: usable records go to record shards ``part-<task>-<k>.parquet`` of at
most ``rows_per_shard`` records, the others to ``<quarantine>/part-<task>.parquet`` as (id,
reason). Each task returns its counts and the stage reads their sums, so the driver never sees a
record; the usable ids' hashes go to ``_id_hashes/`` beside the quarantine, for
``study.data.quarantine`` to find repeated ids. A retried task rewrites the same files.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink

from study import storage
from study.core import quality
from study.core.splits import id_hash64
from study.data import records
from study.data.records import MATCHED, STATUS, to_record_schema

ID_HASHES = "id_hashes"
QUARANTINE_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string())])


def status_counts(table: pa.Table) -> dict[str, int]:
    """Records per read status, and how many usable ones carry a side-table row (``matched``)."""
    counts = {row["values"]: row["counts"] for row in pc.value_counts(table.column(STATUS)).to_pylist()}
    if MATCHED in table.column_names:
        ok = pc.and_(pc.is_valid(table.column(MATCHED)), pc.equal(table.column(STATUS), quality.OK))
        counts["matched"] = int(pc.sum(ok).as_py() or 0)
    return counts


def add_counts(total: dict, counts: dict) -> dict:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value
    return total


class RecordSink(Datasink):
    """Writes usable records as shards under ``root`` and quarantined ones under ``quarantine``;
    ``write_records=False`` only checks (records read in place stay where they are). ``counts``:
    {"read", "ok", <reason>: n, "matched"} summed over the write tasks."""

    def __init__(self, root: str, quarantine: str, rows_per_shard: int, write_records: bool = True):
        self.root, self.quarantine = root, quarantine
        self.rows_per_shard, self.write_records = rows_per_shard, write_records
        self.counts: dict = {}
        self.id_hashes: list = []  # per write task, the file of the usable records' id hashes

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        counts: dict = {"read": 0}
        hashes = []
        shards = ShardWriter(self.root, f"part-{ctx.task_idx:05d}", self.rows_per_shard) if self.write_records else None
        held = ShardWriter(self.quarantine, f"part-{ctx.task_idx:05d}", 2**62, QUARANTINE_SCHEMA)
        with shards or contextlib.nullcontext(), held:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                add_counts(counts, status_counts(table))
                counts["read"] += table.num_rows
                ok = pc.equal(table.column(STATUS), quality.OK)
                bad = table.filter(pc.invert(ok))
                if bad.num_rows:
                    held.write(pa.table({"id": bad.column("id").cast(pa.string()),
                                         "reason": bad.column(STATUS).cast(pa.string())}, schema=QUARANTINE_SCHEMA))
                usable = table.filter(ok)
                hashes.append(id_hash64(usable.column("id").to_pylist()))
                if shards is not None:
                    shards.write(to_record_schema(usable))
        # The usable ids' 64-bit hashes go to a file beside the quarantine (not through the driver;
        # an object in the store would be lost with the worker that made it): one task looks for repeats.
        uri = storage.join(self.quarantine.rstrip("/").rsplit("/", 1)[0], "_id_hashes", f"part-{ctx.task_idx:05d}.npy")
        with storage.open_atomic(uri, "wb") as fh:
            np.save(fh, np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))
        return {"counts": counts, ID_HASHES: uri}

    def on_write_complete(self, write_result) -> None:
        total: dict = {}
        for out in write_result.write_returns:
            add_counts(total, out["counts"])
        self.counts = total
        self.id_hashes = [out[ID_HASHES] for out in write_result.write_returns]


class ShardWriter:
    """Streams tables into ``<prefix>-NNN.parquet`` files, starting a new file every ``rows`` rows;
    no file for no rows."""

    def __init__(self, root: str, prefix: str, rows: int, schema: pa.Schema = records.RECORD_SCHEMA):
        self.root, self.prefix, self.rows, self.schema = root, prefix, rows, schema
        self.files = contextlib.ExitStack()
        self.writer, self.in_file, self.count = None, 0, 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                uri = storage.join(self.root, f"{self.prefix}-{self.count:03d}.parquet")
                fh = self.files.enter_context(storage.open_atomic(uri, "wb"))
                self.writer = self.files.enter_context(pq.ParquetWriter(fh, self.schema))
                self.count += 1
            take = min(table.num_rows, self.rows - self.in_file)
            self.writer.write_table(table.slice(0, take))
            table, self.in_file = table.slice(take), self.in_file + take
            if self.in_file == self.rows:
                self.files.close()
                self.files, self.writer, self.in_file = contextlib.ExitStack(), None, 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.files.__exit__(*exc)
