"""Persisted search results of one query set: written per batch, read whole or by query id.

Layout of ``search/<model>/<set>/<space>/``::

    part-00000.parquet, part-00001.parquet, ...   query_id, neighbor_ids (nearest first), distances
    _parts.json                                   {"key": ..., "complete": parts finished}

A part holds ``rows_per_part`` queries (a multiple of the query batch size, one row group per
batch), in the order of the query set's rows. ``_parts.json`` names the parts that are finished
and the key they were written under (index, queries, k, batching): a rerun with the same key
resumes after the last finished part, with the same batches as an undisturbed run; any other key
starts the directory afresh. A part is trusted only once ``_parts.json`` counts it, so a part cut
short (on an object store, where a failed upload may still land) is rewritten.

The measure stages read results through checks that they belong to the run's split manifest: a
neighbour that is not a public record, a query that is not a record of the set it attacks, or a
record one model was queried with and the other was not, means the results were written for
another split plan or data set, or by a search cut short. Measuring anyway would leave those
records out without a word and compare the two models on different records, so each check stops
the run with one line naming the results and the first few ids.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from study import storage
from study.data.lookup import IdIndex
from study.errors import StudyError

PARTS = "_parts.json"
FIRST_IDS = 5  # how many offending ids a check's message names
RERUN = "rerun the search stage (remove the run's search/ directory)"
SCHEMA = pa.schema([
    ("query_id", pa.string()),
    ("neighbor_ids", pa.list_(pa.string())),
    ("distances", pa.list_(pa.float32())),
])


def part_uri(uri: str, j: int) -> str:
    return storage.join(uri, f"part-{j:05d}.parquet")


class ResultWriter:
    """Appends query batches to the parts of one result directory; ``start_row`` says where a
    resumed run picks up."""

    def __init__(self, uri: str, key: str, rows_per_part: int):
        self.uri, self.key, self.rows_per_part = uri, key, rows_per_part
        state_uri = storage.join(uri, PARTS)
        state = storage.read_json(state_uri) if storage.exists(state_uri) else None
        if not state or state.get("key") != key:
            storage.remove(uri)
            state = {"key": key, "complete": 0}
            storage.write_json(state_uri, state)
        self.complete = int(state["complete"])
        self.start_row = self.complete * rows_per_part
        self.row = self.start_row
        self._fh = self._writer = None

    def write(self, query_ids: list[str], neighbour_ids: np.ndarray, D: np.ndarray) -> None:
        """One batch: ids (nq,), neighbour record ids (nq, k) object, distances (nq, k)."""
        done = 0
        while done < len(query_ids):
            if self._writer is None:
                self._open()
            room = (self.complete + 1) * self.rows_per_part - self.row
            take = min(room, len(query_ids) - done)
            sl = slice(done, done + take)
            table = pa.table({
                "query_id": pa.array(query_ids[sl], pa.string()),
                "neighbor_ids": pa.array([list(r) for r in neighbour_ids[sl]], pa.list_(pa.string())),
                "distances": pa.array([list(r) for r in np.asarray(D[sl], np.float32)], pa.list_(pa.float32())),
            }, schema=SCHEMA)
            self._writer.write_table(table)
            self.row += take
            done += take
            if self.row == (self.complete + 1) * self.rows_per_part:
                self._finish()

    def close(self) -> None:
        """Finish the last part; a query set without rows still gets an empty part-00000."""
        if self._writer is None and self.row == 0:
            self._open()
        if self._writer is not None:
            self._finish()

    def _open(self) -> None:
        uri = part_uri(self.uri, self.complete)
        storage.makedirs(uri.rsplit("/", 1)[0])
        fs, path = storage.fs_and_path(uri)
        self._fh = fs.open(path, "wb")
        self._writer = pq.ParquetWriter(self._fh, SCHEMA)

    def _finish(self) -> None:
        self._writer.close()
        self._fh.close()
        self._fh = self._writer = None
        self.complete += 1
        storage.write_json(storage.join(self.uri, PARTS), {"key": self.key, "complete": self.complete})


def _dataset(uri: str) -> pads.Dataset:
    files = [f for f in storage.list_files(uri) if f.endswith(".parquet")]
    fs, paths = storage.arrow_fs_paths(files)
    return pads.dataset(paths, filesystem=fs, format="parquet", schema=SCHEMA)


def read_results(uri: str) -> tuple[list[str], list[list[str]]]:
    """(query ids, neighbour ids per query, nearest first) of one persisted search, in query order."""
    table = _dataset(uri).to_table(columns=["query_id", "neighbor_ids"])
    return table.column("query_id").to_pylist(), table.column("neighbor_ids").to_pylist()


def read_neighbours(uri: str, query_ids: list[str]) -> dict[str, list[str]]:
    """Neighbour ids of the given queries only: the filter on query_id is pushed down to the
    Parquet reader, which skips row groups whose query_id range holds none of them."""
    table = _dataset(uri).to_table(columns=["query_id", "neighbor_ids"],
                                   filter=pc.field("query_id").isin(pa.array(sorted(set(query_ids)), pa.string())))
    return dict(zip(table.column("query_id").to_pylist(), table.column("neighbor_ids").to_pylist()))


def iter_results(uri: str, batch_rows: int, columns: tuple[str, ...] = ("query_id", "neighbor_ids")):
    """Arrow record batches of at most ``batch_rows`` queries, in query order: the measure stage
    reads results this way, so it holds one batch of neighbour ids at a time."""
    yield from _dataset(uri).to_batches(columns=list(columns), batch_size=batch_rows)


def neighbour_matrix(neighbor_ids: pa.Array, rows_of) -> tuple[np.ndarray, np.ndarray]:
    """(nq, k) int64 rows of a batch's neighbours (``rows_of``: ids -> rows, -1 unknown), -1 where
    a query has fewer than k neighbours or names a record ``rows_of`` does not know; and the
    neighbour ids it does not know (object array, nulls excluded), for the caller to judge."""
    lengths = pc.list_value_length(neighbor_ids).to_numpy(zero_copy_only=False)
    nq, k = len(lengths), int(lengths.max()) if len(lengths) else 0
    out = np.full((nq, k), -1, dtype=np.int64)
    flat_ids = neighbor_ids.flatten()
    rows = rows_of(flat_ids)  # an Arrow array: IdIndex reads its buffers, no Python string per id
    col = np.arange(len(flat_ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(np.arange(nq), lengths), col] = rows
    unknown = (rows < 0) & pc.is_valid(flat_ids).to_numpy(zero_copy_only=False)
    return out, (np.asarray(flat_ids.filter(pa.array(unknown)).to_pylist(), dtype=object) if unknown.any()
                 else np.zeros(0, dtype=object))


def first_ids(ids) -> str:
    """The first few of ``ids`` in sorted order, for a message."""
    shown = sorted({str(i) for i in ids})
    return ", ".join(shown[:FIRST_IDS]) + (", ..." if len(shown) > FIRST_IDS else "")


def public_rows(neighbor_ids: pa.Array, public, uri: str) -> np.ndarray:
    """(nq, k) rows of one batch's neighbours in the public set (``public``: an ``IdIndex``, or a
    function of an Arrow array of ids giving their rows), -1 where a query has fewer than k
    neighbours; a StudyError if any neighbour is not a public record of this run."""
    rows, unknown = neighbour_matrix(neighbor_ids, public.rows if isinstance(public, IdIndex) else public)
    if len(unknown):
        raise StudyError(f"search results under {uri} name {len(unknown)} neighbour(s) in a batch of {len(rows)} "
                         f"queries that are not records of this run's public split (first: {first_ids(unknown)}): "
                         f"they were searched for other splits or data; {RERUN}")
    return rows


def check_queries(q_ids: np.ndarray, rows: np.ndarray, uri: str) -> None:
    """Every query must be a record of the set it attacks (``rows``: its row there, -1 if none)."""
    unknown = np.asarray(q_ids)[np.asarray(rows) < 0]
    if len(unknown):
        raise StudyError(f"search results under {uri} hold {len(unknown)} of {len(q_ids)} queries that are not "
                         f"records of the set they attack (first: {first_ids(unknown)}); {RERUN}")


def check_same_queries(ids: Mapping[str, np.ndarray], uris: Mapping[str, str]) -> None:
    """Every model must have been queried with the same records (``ids``: model -> query ids, any
    order), or the models' sides would cover different records."""
    (first, first_q), *others = ids.items()
    for model, q in others:
        if np.array_equal(np.sort(first_q), np.sort(q)):
            continue
        only_first, only_other = np.setdiff1d(first_q, q), np.setdiff1d(q, first_q)
        differ = np.concatenate([only_first, only_other])
        detail = "the same records, some of them repeated"
        if len(differ):
            detail = (f"{len(only_first)} only in {first}'s, {len(only_other)} only in {model}'s "
                      f"(first: {first_ids(differ)})")
        raise StudyError(f"the search results of {first} ({uris[first]}) hold {len(first_q)} queries and those of "
                         f"{model} ({uris[model]}) {len(q)}: {detail}; {RERUN}")
