"""The VLM study's object tables: which objects each public and attacked record shows, as sparse
object sets over the vocabulary's ids (``core.object_sets``: memory follows the objects present,
never records x vocabulary), read once from the record shards for the measure stage and the
utility numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from study.core.object_sets import ObjectSets
from study.data import records
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.frame.context import RunContext

BATCH_ROWS = 65_536  # records per batch


def object_table(ctx: RunContext, ids: list[str]) -> dict[str, tuple[list[str], str]]:
    """id -> (objects, caption) for the given records."""
    table = records.read_records(ctx.data_root, ids, columns=["id", "objects", "caption"])
    return {i: (o or [], c or "") for i, o, c in zip(*(table.column(n).to_pylist() for n in ("id", "objects", "caption")))}


def object_sets(rows: list[list[str]], vocab: dict[str, int]) -> ObjectSets:
    """The object sets of records given by their objects' names; names outside ``vocab`` are left out."""
    return ObjectSets.from_lists([[vocab[o] for o in objs if o in vocab] for objs in rows], len(vocab))


def _object_pairs(objects: pa.Array, vocab: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(row in the batch, object id) of every known object of a batch's object lists, from Arrow's
    flattened lists (no Python loop)."""
    lengths = pc.fill_null(pc.list_value_length(objects), 0).to_numpy(zero_copy_only=False)
    ids = pc.index_in(pc.list_flatten(objects), value_set=vocab)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    known = ~pc.is_null(ids).to_numpy(zero_copy_only=False)
    return rows[known], pc.fill_null(ids, 0).to_numpy(zero_copy_only=False).astype(np.int64)[known]


@dataclass
class ObjectTables:
    """What the measurement needs of each record, from one scan of the records' metadata: the
    public set's object sets in ``public`` index rows; the attacked records' objects and captions
    (lists, in ``attacked`` index rows)."""

    vocab: dict[str, int]
    public: IdIndex
    public_objects: ObjectSets
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
    pair_rows, pair_objects = [], []
    att_objects, att_captions = [None] * len(att), [None] * len(att)
    for batch in _record_batches(ctx):
        ids = batch.column("id").to_pylist()
        rows = public.rows(ids)
        hit = rows >= 0
        if hit.any():
            in_batch, objs = _object_pairs(batch.column("objects").filter(pa.array(hit)), vocab_arr)
            pair_rows.append(rows[hit][in_batch])
            pair_objects.append(objs)
        rows = att.rows(ids)
        for j in np.flatnonzero(rows >= 0):  # attacked records only: their ground truth, per record
            att_objects[rows[j]] = batch.column("objects")[int(j)].as_py() or []
            att_captions[rows[j]] = batch.column("caption")[int(j)].as_py() or ""
    empty = np.zeros(0, np.int64)
    public_objects = ObjectSets.from_pairs(np.concatenate(pair_rows) if pair_rows else empty,
                                           np.concatenate(pair_objects) if pair_objects else empty,
                                           len(public), len(vocab_names))
    return ObjectTables({o: j for j, o in enumerate(vocab_names)}, public, public_objects, att, att_objects,
                        att_captions)
