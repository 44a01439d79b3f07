"""Splits the user gives (``splits.assignments``): which records each model trained elsewhere saw.

The file is a Parquet table (a file or a folder of them) with an ``id`` (or ``key``) column and a
``split`` column, or a folder of text files named after the splits (``target.txt``, ``reference.txt``,
…), one record id per line. ``normalise`` reads it, checks it (known split names, no id in two
splits; an id listed twice in one split is counted and kept once), writes it as one Parquet table
(id, split) under the splits stage, and finds which listed ids the data does not hold, scanning
only the records' id column. ``Assigned`` answers "which split is this id in" for a batch of ids,
from that table, loaded once per process (``IdIndex``: the ids' bytes plus 8 per record).
"""
from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from study import storage
from study.config.checks import SPLIT_NAMES
from study.core.splits import UNASSIGNED
from study.data.lookup import IdIndex
from study.errors import ConfigError, DataError

KEY = "splits.assignments"
EXAMPLES = 10


def assigned_uri(splits_dir: str) -> str:
    """Where the splits stage keeps the user's splits, checked, as one table (id, split)."""
    return storage.join(splits_dir, "assigned.parquet")


def missing_uri(splits_dir: str) -> str:
    """The listed ids the data does not hold (id, split)."""
    return storage.join(splits_dir, "assigned_missing.parquet")


def version(uri: str) -> str:
    """The user's file's fingerprint (sha256 of its contents; a folder's names and contents)."""
    from study import model_cache

    return model_cache.fingerprint(uri, KEY)


def _text_files(uri: str, files: list[str]) -> pa.Table:
    ids, splits = [], []
    for f in files:
        name = posixpath.basename(f)[: -len(".txt")]
        if name not in SPLIT_NAMES:
            raise ConfigError(f"{KEY}: {f} names no split; name each file after its split ({', '.join(SPLIT_NAMES)})")
        lines = [ln.strip() for ln in storage.read_bytes(f).decode("utf-8").splitlines()]
        kept = [ln for ln in lines if ln]
        ids += kept
        splits += [name] * len(kept)
    return pa.table({"id": pa.array(ids, pa.string()), "split": pa.array(splits, pa.string())})


def read_assignments(uri: str) -> pa.Table:
    """(id, split) rows as listed, from a Parquet table or a folder of per-split text files."""
    if not storage.exists(uri):
        raise ConfigError(f"{KEY}: nothing at {uri}")
    files = [f for f in storage.list_files(uri)] or [uri]
    texts = [f for f in files if f.endswith(".txt")]
    if texts:
        return _text_files(uri, texts)
    parquet = [f for f in files if f.endswith(".parquet")] or files
    try:
        fs, paths = storage.arrow_fs_paths(parquet)
        table = pq.ParquetDataset(paths, filesystem=fs).read()
    except Exception:
        raise DataError(f"{KEY}: {uri} is neither a Parquet table (id or key, split) nor a folder of "
                        "<split>.txt files") from None
    column = "id" if "id" in table.column_names else "key" if "key" in table.column_names else None
    if column is None or "split" not in table.column_names:
        raise DataError(f"{KEY}: {uri} needs an 'id' (or 'key') column and a 'split' column; it has "
                        f"{table.column_names}")
    return pa.table({"id": table.column(column).cast(pa.string()), "split": table.column("split").cast(pa.string())})


def check_assignments(table: pa.Table) -> tuple[pa.Table, int]:
    """(the rows with each (id, split) once, the number of repeated rows dropped); raises on an
    unknown split name, a missing id or an id in two splits."""
    if table.column("id").null_count or table.column("split").null_count:
        raise DataError(f"{KEY}: {table.column('id').null_count + table.column('split').null_count} row(s) "
                        "without an id or a split")
    unknown = sorted(set(pc.unique(table.column("split")).to_pylist()) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"{KEY}: unknown split(s) {unknown}; expected {list(SPLIT_NAMES)}")
    unique = table.group_by(["id", "split"], use_threads=False).aggregate([])
    repeated = table.num_rows - unique.num_rows
    per_id = unique.group_by("id", use_threads=False).aggregate([("split", "count"), ("split", "list")])
    twice = per_id.filter(pc.greater(per_id.column("split_count"), 1))
    if twice.num_rows:
        first = twice.slice(0, 1).to_pylist()[0]
        raise DataError(f"{KEY}: {twice.num_rows} id(s) in more than one split (e.g. {first['id']!r}: "
                        f"{' and '.join(sorted(first['split_list']))}); the splits must be disjoint")
    return unique.sort_by("id"), repeated


def normalise(uri: str, records_uris: list[str], out_uri: str, missing_uri: str) -> dict:
    """Read and check the user's file, write it as one table (``out_uri``), find the listed ids the
    records lack (written to ``missing_uri``). Returns counts and a few missing ids per split."""
    table, repeated = check_assignments(read_assignments(uri))
    index = IdIndex([table.column("id")])
    found = np.zeros(table.num_rows, dtype=bool)
    fs, paths = storage.arrow_fs_paths(records_uris)
    for path in paths:
        for batch in pq.ParquetFile(fs.open_input_file(path)).iter_batches(columns=["id"], batch_size=65536):
            rows = index.rows(batch.column(0))
            found[rows[rows >= 0]] = True
    splits = table.column("split").to_numpy(zero_copy_only=False)
    listed = {s: int((splits == s).sum()) for s in SPLIT_NAMES if (splits == s).any()}
    missing = table.filter(pa.array(~found))
    with storage.open_atomic(out_uri) as fh:
        pq.write_table(table, fh)
    with storage.open_atomic(missing_uri) as fh:
        pq.write_table(missing, fh)
    gone = missing.column("split").to_numpy(zero_copy_only=False)
    return {"listed": listed, "missing": {s: int((gone == s).sum()) for s in listed},
            "missing_examples": {s: missing.filter(pc.equal(missing.column("split"), s)).column("id")
                                 .slice(0, EXAMPLES).to_pylist() for s in listed if (gone == s).any()},
            "repeated_rows": repeated}


_LOADED: dict[str, tuple[IdIndex, np.ndarray]] = {}


class Assigned:
    """The split of each id from the normalised table at ``uri`` (``UNASSIGNED`` for ids it does
    not list); picklable, the table is read once per process on first use. ``version`` (the user
    file's fingerprint) tells a table rewritten at the same place from the one read before."""

    def __init__(self, uri: str, version: str):
        self.uri, self.version = uri, version

    def __call__(self, ids) -> np.ndarray:
        key = f"{self.uri}#{self.version}"
        if key not in _LOADED:
            with storage.open_read(self.uri) as fh:
                table = pq.read_table(fh)
            _LOADED[key] = (IdIndex([table.column("id")]),
                            table.column("split").to_numpy(zero_copy_only=False).astype(object))
        index, splits = _LOADED[key]
        rows = index.rows(ids)
        out = np.full(len(rows), UNASSIGNED, dtype=object)
        out[rows >= 0] = splits[rows[rows >= 0]]
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, Assigned) and (other.uri, other.version) == (self.uri, self.version)

    def __hash__(self) -> int:
        return hash((self.uri, self.version))
