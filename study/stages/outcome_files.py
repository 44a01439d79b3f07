"""Per-record outcome files of the measure stage, shared by the study kinds: one file per part of
a model's search results, written by the task that scored that part, under
``measure/outcomes/<model>/<split>/<space>/`` (the search results' own layout), and read back
whole by the statistics tasks. No Ray here: the tasks are submitted by ``measure_tasks``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from study import storage
from study.search import results

# score(query ids (n,) str, the batch's columns of the search results: neighbour ids, then the
# others asked for) -> (outcome table, counts to add)
Score = Callable[..., tuple[pa.Table, dict]]


def score_part_file(results_uri: str, part: int, out_uri: str, batch_rows: int, score: Score,
                    columns: tuple[str, ...] = ("neighbor_ids",)) -> dict:
    """Score one part of a model's search results ``batch_rows`` queries at a time and write the
    outcome tables ``score`` makes of each batch (its ids and ``columns``) to
    ``out_uri/part-<part>.parquet``; returns the summed counts, with "records". An empty part gets
    an empty file with the columns."""
    fs, path = storage.fs_and_path(results.part_uri(results_uri, part))
    storage.makedirs(out_uri)
    out_fs, out_path = storage.fs_and_path(storage.join(out_uri, f"part-{part:05d}.parquet"))
    counts: dict = {"records": 0}
    with fs.open(path, "rb") as fh, out_fs.open(out_path, "wb") as out:
        writer = None
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=["query_id", *columns]):
            q_ids = np.asarray(batch.column("query_id").to_pylist(), dtype=str)
            table, got = score(q_ids, *(batch.column(c) for c in columns))
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            counts["records"] += len(q_ids)
            for name, value in got.items():
                counts[name] = counts.get(name, 0) + int(value)
        if writer is None:
            empty = {"neighbor_ids": pa.array([], pa.list_(pa.string())), "distances": pa.array([], pa.list_(pa.float32()))}
            writer = pq.ParquetWriter(out, score(np.zeros(0, str), *(empty[c] for c in columns))[0].schema)
        writer.close()
    return counts


def write_outcomes(out_uri: str, table: pa.Table) -> None:
    """Outcomes made otherwise than from search results (a predictor's) as one file in the same
    layout: whatever was there before is replaced."""
    storage.remove(out_uri)
    storage.makedirs(out_uri)
    fs, path = storage.fs_and_path(storage.join(out_uri, "part-00000.parquet"))
    with fs.open(path, "wb") as out:
        pq.write_table(table, out)


Block = tuple  # (lowest id, id past the last) of an id range; None: unbounded on that side
WHOLE: Block = (None, None)
SAMPLES_PER_FILE = 1024  # ids a file gives to the choice of the blocks' bounds


def _in_block(table: pa.Table, block: Block) -> pa.Table:
    lo, hi = block
    if lo is not None:
        table = table.filter(pc.greater_equal(table.column("id"), lo))
    if hi is not None:
        table = table.filter(pc.less(table.column("id"), hi))
    return table


def _files(uri: str) -> list[str]:
    return sorted(f for f in storage.list_files(uri) if f.endswith(".parquet")) if storage.exists(uri) else []


def read_outcomes(uri: str, block: Block = WHOLE) -> tuple[pa.Table | None, np.ndarray, np.ndarray]:
    """(the outcome files of ``uri`` as one table, or None when there is none; the records' ids
    (n,) str; the order that sorts them): the statistics do not depend on the files' order. With an
    id range ``block``, only its records, read file by file (a task holds one file beside them)."""
    files = _files(uri)
    fs, paths = storage.arrow_fs_paths(files)
    if not files:
        table = None
    elif block == WHOLE:
        table = pq.ParquetDataset(paths, filesystem=fs).read()
    else:
        table = pa.concat_tables([_in_block(pq.read_table(p, filesystem=fs), block) for p in paths])
    n = table.num_rows if table is not None else 0
    ids = np.asarray(table.column("id").to_pylist(), dtype=str) if n else np.zeros(0, str)
    return table, ids, np.argsort(ids, kind="stable")


def id_blocks(uris: list[str], blocks: int) -> list[Block]:
    """At most ``blocks`` id ranges that split the records of the outcome directories ``uris``
    into parts of about equal size, from up to SAMPLES_PER_FILE ids of each file (each sample
    weighted by the records it stands for); one range (``WHOLE``) for one block."""
    if blocks <= 1:
        return [WHOLE]
    picks, weights = [], []
    for uri in uris:
        files = _files(uri)
        fs, paths = storage.arrow_fs_paths(files)
        for path in paths:
            column = pq.read_table(path, columns=["id"], filesystem=fs).column("id")
            column = column.take(pc.sort_indices(column))
            step = max(1, -(-len(column) // SAMPLES_PER_FILE))
            got = column[step // 2::step].to_pylist()
            picks += got
            weights += [len(column) / len(got)] * len(got) if got else []
    order = sorted(range(len(picks)), key=picks.__getitem__)
    cumulative = np.cumsum([weights[j] for j in order])
    bounds = []
    for b in range(1, blocks):
        at = int(np.searchsorted(cumulative, cumulative[-1] * b / blocks)) if len(order) else 0
        if at < len(order) and (not bounds or picks[order[at]] > bounds[-1]):
            bounds.append(picks[order[at]])
    edges = [None, *bounds, None]
    return list(zip(edges[:-1], edges[1:]))
