"""Embedding shards as one writing task leaves them: ``<root>/<model>/<set>/<view>/<stem>[-k].parquet``.

A ``ShardWriter`` takes the embedded rows of one Ray Data write task a block at a time (``id``,
``set`` and one ``<model>/<view>`` column of (n, d) vectors per model and view), keeps for each set
the views listed in ``views_of_set``, and writes each (model, set, view) to files of at most
``rows_per_file`` rows with columns ``id`` (string) and ``embedding`` (fixed-size list of float32).

Rerun safety: the files of a task are named after its ``stem`` (the pipeline uses the task index),
so a task that Ray retries rewrites the same files rather than adding rows; and a file appears
under its name only when complete (a local temporary is hidden, a dot file; an object-store upload
completes on commit and is abandoned on abort). Memory: the caller's block plus, per open file, a
row-group buffer of ``ROW_GROUP_BYTES``. No Ray here, so the writer is tested on plain arrays.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage

ROW_GROUP_BYTES = 8 << 20  # vectors buffered per open file before they go out as one Parquet row group


def file_name(stem: str, k: int) -> str:
    """The ``k``-th file a task writes for one (model, set, view)."""
    return f"{stem}.parquet" if k == 0 else f"{stem}-{k}.parquet"


def embedding_table(ids: np.ndarray, emb: np.ndarray) -> pa.Table:
    """ids (n,), emb (n, d) -> the shard schema: ``id`` string, ``embedding`` fixed-size list<float32>[d]."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    return pa.table({
        "id": pa.array(np.asarray(ids).astype(str), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]),
    })


class _AtomicFile:
    """A binary file that appears under ``uri`` only on ``commit``."""

    def __init__(self, uri: str):
        self.fs, self.path = storage.fs_and_path(uri)
        self.local = storage.is_local(uri)
        if self.local:
            parent, name = os.path.split(self.path)
            os.makedirs(parent, exist_ok=True)
            self.tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
            self.fh = open(self.tmp, "wb")
        else:  # object stores have no directories to make; the PUT (or multipart upload) is atomic
            self.fh = self.fs.open(self.path, "wb")

    def commit(self) -> None:
        self.fh.close()
        if self.local:
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.local:
            self.fh.close()
            os.remove(self.tmp)
        else:
            self.fh.discard()  # abandon the multipart upload, if one started
            self.fh.closed = True  # and never flush the rest, not even when garbage-collected


class _ShardFile:
    """One Parquet file being written: rows are buffered into row groups of about ROW_GROUP_BYTES."""

    def __init__(self, uri: str, dim: int):
        self.target = _AtomicFile(uri)
        schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
        self.writer = pq.ParquetWriter(self.target.fh, schema)
        self.group_rows = max(1, ROW_GROUP_BYTES // (4 * dim))
        self.rows = self.pending_rows = 0
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def append(self, ids: np.ndarray, emb: np.ndarray) -> None:
        self.pending.append((ids, emb))
        self.rows += len(ids)
        self.pending_rows += len(ids)
        if self.pending_rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            ids = np.concatenate([i for i, _ in self.pending])
            emb = np.concatenate([e for _, e in self.pending])
            self.writer.write_table(embedding_table(ids, emb), row_group_size=len(ids))
            self.pending, self.pending_rows = [], 0

    def commit(self) -> None:
        self._flush()
        self.writer.close()
        self.target.commit()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the footer of a file being dropped does not matter
            self.writer.close()
        self.target.abort()


class ShardWriter:
    """Rows of one writing task -> files of at most ``rows_per_file`` rows per (model, set, view)."""

    def __init__(self, root: str, views_of_set: Mapping[str, tuple[str, ...]], rows_per_file: int, stem: str):
        self.root, self.views_of_set, self.rows_per_file, self.stem = root, views_of_set, rows_per_file, stem
        self.open: dict[tuple[str, str, str], _ShardFile] = {}
        self.files: dict[tuple[str, str, str], int] = {}
        self.rows: dict[tuple[str, str, str], int] = {}

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        """One block of embedded rows: ``id`` (n,), ``set`` (n,), ``<model>/<view>`` (n, d)."""
        sets = np.asarray(batch["set"]).astype(str)
        ids = np.asarray(batch["id"])
        for s in map(str, np.unique(sets)):
            rows = sets == s
            for column, values in batch.items():
                if "/" not in column:
                    continue
                model, view = column.split("/", 1)
                if view in self.views_of_set.get(s, ()):  # e.g. an image row has no text embedding
                    self._append((model, s, view), ids[rows], np.asarray(values)[rows])

    def _append(self, key: tuple[str, str, str], ids: np.ndarray, emb: np.ndarray) -> None:
        while len(ids):
            if key not in self.open:
                k = self.files.get(key, 0)
                self.files[key] = k + 1
                self.open[key] = _ShardFile(storage.join(self.root, *key, file_name(self.stem, k)), emb.shape[1])
            f = self.open[key]
            take = min(len(ids), self.rows_per_file - f.rows)
            f.append(ids[:take], emb[:take])
            self.rows[key] = self.rows.get(key, 0) + take
            ids, emb = ids[take:], emb[take:]
            if f.rows == self.rows_per_file:
                self.open.pop(key).commit()

    def close(self) -> dict:
        """Commit the open files; {"rows": {(model, set, view): rows}, "files": files written}."""
        for key in list(self.open):
            self.open.pop(key).commit()
        return {"rows": dict(self.rows), "files": sum(self.files.values())}

    def abort(self) -> None:
        """Drop the files still open (those committed stay: a retry rewrites them under the same names)."""
        for key in list(self.open):
            self.open.pop(key).abort()
