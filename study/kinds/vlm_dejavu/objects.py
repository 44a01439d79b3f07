"""The VLM study's object tables: which objects each public and attacked record shows, as a
(records x vocabulary) boolean matrix, read once from the record shards for the measure stage and
the utility numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from study.data import records
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.frame.context import RunContext

BATCH_ROWS = 65_536  # records per batch


def object_table(ctx: RunContext, ids: list[str]) -> dict[str, tuple[list[str], str]]:
    """id -> (objects, caption) for the given records."""
    table = records.read_records(ctx.data_root, ids, columns=["id", "objects", "caption"])
    return {i: (o or [], c or "") for i, o, c in zip(*(table.column(n).to_pylist() for n in ("id", "objects", "caption")))}


def object_matrix(rows: list[list[str]], vocab: dict[str, int]) -> np.ndarray:
    m = np.zeros((len(rows), len(vocab)), dtype=bool)
    for r, objs in enumerate(rows):
        m[r, [vocab[o] for o in objs if o in vocab]] = True
    return m


def _objects_matrix(objects: pa.Array, vocab: pa.Array) -> np.ndarray:
    """(n, C) bool object sets of a batch, built from Arrow's flattened lists (no Python loop)."""
    lengths = pc.fill_null(pc.list_value_length(objects), 0).to_numpy(zero_copy_only=False)
    cols = pc.index_in(pc.list_flatten(objects), value_set=vocab).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    known = ~np.isnan(cols.astype(float))
    m = np.zeros((len(lengths), len(vocab)), dtype=bool)
    m[rows[known], cols[known].astype(np.int64)] = True
    return m


@dataclass
class ObjectTables:
    """What the measurement needs of each record, from one scan of the records' metadata: the
    public set's object sets as a (n public, C) matrix in ``public`` index rows; the attacked
    records' objects and captions (lists, in ``attacked`` index rows)."""

    vocab: dict[str, int]
    public: IdIndex
    public_objects: np.ndarray
    attacked: IdIndex
    attacked_objects: list
    attacked_captions: list


def _record_batches(ctx: RunContext, batch_rows: int = BATCH_ROWS):
    yield from records.dataset(ctx.data_root).to_batches(columns=["id", "objects", "caption"], batch_size=batch_rows)


def object_tables(ctx: RunContext, attacked: tuple[str, ...]) -> ObjectTables:
    """Two streaming passes over (id, objects, caption): the vocabulary, then the tables."""
    public = IdIndex(b.column("id").to_pylist() for b in iter_split(ctx.splits_dir, "public"))
    att = IdIndex(b.column("id").to_pylist() for s in attacked for b in iter_split(ctx.splits_dir, s))
    names = set()
    for batch in _record_batches(ctx):
        ids = batch.column("id").to_pylist()
        used = (public.rows(ids) >= 0) | (att.rows(ids) >= 0)
        names.update(pc.unique(pc.list_flatten(batch.column("objects").filter(pa.array(used)))).to_pylist())
    names.discard(None)
    vocab_names = sorted(names)
    vocab_arr = pa.array(vocab_names, pa.string())
    public_objects = np.zeros((len(public), len(vocab_names)), dtype=bool)
    att_objects, att_captions = [None] * len(att), [None] * len(att)
    for batch in _record_batches(ctx):
        ids = batch.column("id").to_pylist()
        rows = public.rows(ids)
        hit = rows >= 0
        if hit.any():
            public_objects[rows[hit]] = _objects_matrix(batch.column("objects").filter(pa.array(hit)), vocab_arr)
        rows = att.rows(ids)
        for j in np.flatnonzero(rows >= 0):  # attacked records only: their ground truth, per record
            att_objects[rows[j]] = batch.column("objects")[int(j)].as_py() or []
            att_captions[rows[j]] = batch.column("caption")[int(j)].as_py() or ""
    return ObjectTables({o: j for j, o in enumerate(vocab_names)}, public, public_objects, att, att_objects,
                        att_captions)
