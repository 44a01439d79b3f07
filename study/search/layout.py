"""Embedding sets on storage, read by row range: what a shard, a query stream or a sample reads.

An embedding set is a directory of Parquet files (``id``: string, ``embedding``: fixed-size list
of float32), as the embed stage writes them, local or on an object store. Its rows are numbered
in file order (sorted paths), so global row r is the r-th row of the concatenated files: a shard
reads rows [start, stop), a query stream reads its set in batches, a sample reads chosen rows.
``describe`` reads only the files' footers, so the driver learns sizes without reading vectors.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage

CHUNK_ROWS = 65_536  # rows per read: 32 MB of float32 at d = 128, 128 MB at d = 512


@dataclass(frozen=True)
class EmbeddingSet:
    uri: str
    files: tuple[str, ...]
    rows: tuple[int, ...]  # rows per file
    d: int
    name_bytes: float  # mean stored length of an id
    fingerprint: tuple  # (file name, bytes, rows, modification time) per file

    @property
    def n(self) -> int:
        return sum(self.rows)

    def pieces(self, start: int, stop: int) -> tuple[tuple[str, int, int], ...]:
        """(file, first row, end row) pieces covering global rows [start, stop)."""
        out, base = [], 0
        for f, n in zip(self.files, self.rows):
            a, b = max(start, base), min(stop, base + n)
            if a < b:
                out.append((f, a - base, b - base))
            base += n
        return tuple(out)


def _parquet(uri: str) -> pq.ParquetFile:
    fs, (path,) = storage.arrow_fs_paths([uri])
    return pq.ParquetFile(fs.open_input_file(path))


def describe(uri: str) -> EmbeddingSet:
    """Files, row counts, dimension and fingerprint of an embedding set, from footers only."""
    files = [f for f in storage.list_files(uri) if f.endswith(".parquet")]
    rows, fingerprint, d, id_bytes = [], [], 0, 0
    for f in files:
        pf = _parquet(f)
        meta = pf.metadata
        field = pf.schema_arrow.field("embedding").type
        d = field.list_size
        id_col = pf.schema_arrow.get_field_index("id")
        id_bytes += sum(meta.row_group(g).column(id_col).total_uncompressed_size for g in range(meta.num_row_groups))
        fs, path = storage.fs_and_path(f)
        info = fs.info(path)
        changed = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created")
        rows.append(meta.num_rows)
        fingerprint.append((f.rsplit("/", 1)[-1], int(info.get("size", 0)), meta.num_rows, str(changed)))
    n = sum(rows)
    return EmbeddingSet(uri, tuple(files), tuple(rows), d, id_bytes / n if n else 0.0, tuple(fingerprint))


def vectors(column: pa.Array | pa.ChunkedArray, d: int) -> np.ndarray:
    """(n, d) float32 from a fixed-size-list column (``flatten`` honours slices; ``values`` does not)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.ascontiguousarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)


def iter_pieces(
    pieces: Sequence[tuple[str, int, int]], columns: Sequence[str], chunk_rows: int = CHUNK_ROWS
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``chunk_rows`` rows covering the pieces, in order; only the row
    groups that overlap a piece are read."""
    for uri, start, stop in pieces:
        pf = _parquet(uri)
        base = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if base + n > start and base < stop:
                pos = base
                for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[g], columns=list(columns)):
                    a, b = max(start, pos) - pos, min(stop, pos + batch.num_rows) - pos
                    if a < b:
                        yield batch.slice(a, b - a)
                    pos += batch.num_rows
            base += n
            if base >= stop:
                break


def iter_batches(
    es: EmbeddingSet, batch_size: int, start: int = 0
) -> Iterator[tuple[int, list[str], np.ndarray]]:
    """(first global row, ids, (rows, d) vectors) for consecutive batches of exactly
    ``batch_size`` rows (the last may be short), from global row ``start`` on."""
    pending: list[pa.RecordBatch] = []
    held, row = 0, start
    chunk = max(batch_size, 1024)
    for batch in iter_pieces(es.pieces(start, es.n), ("id", "embedding"), chunk):
        pending.append(batch)
        held += batch.num_rows
        while held >= batch_size:
            table = pa.Table.from_batches(pending)
            head, rest = table.slice(0, batch_size), table.slice(batch_size)
            yield row, head.column("id").to_pylist(), vectors(head.column("embedding"), es.d)
            row += batch_size
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        table = pa.Table.from_batches(pending)
        yield row, table.column("id").to_pylist(), vectors(table.column("embedding"), es.d)


def read_rows(es: EmbeddingSet, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), d) vectors of the given global rows (sorted, distinct), reading only the row
    groups that hold them."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= es.n):
        raise ValueError("read_rows needs sorted, distinct rows within the set")
    out = np.empty((len(rows), es.d), dtype=np.float32)
    starts = np.cumsum((0,) + es.rows)
    filled = 0
    for f, (lo, hi) in zip(es.files, zip(starts[:-1], starts[1:])):
        a, b = bisect.bisect_left(rows, lo), bisect.bisect_left(rows, hi)
        if a == b:
            continue
        local = rows[a:b] - lo
        pf = _parquet(f)
        base = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo_g, hi_g = np.searchsorted(local, base), np.searchsorted(local, base + n)
            if lo_g < hi_g:
                x = vectors(pf.read_row_group(g, columns=["embedding"]).column("embedding"), es.d)
                out[filled : filled + hi_g - lo_g] = x[local[lo_g:hi_g] - base]
                filled += hi_g - lo_g
            base += n
    return out


def read_ids(pieces: Sequence[tuple[str, int, int]]) -> pa.Array:
    """The ``id`` column of the pieces as one large_string array (no 2 GiB offset limit)."""
    chunks = [b.column("id").cast(pa.large_string()) for b in iter_pieces(pieces, ("id",))]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())
