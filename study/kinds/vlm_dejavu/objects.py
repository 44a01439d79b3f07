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


class Texts:
    """Strings as one UTF-8 buffer and (n + 1,) offsets: two NumPy arrays, which Ray hands to
    tasks without copying them, where a list of millions of Python strings would be unpickled
    in every task."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray):
        self.offsets, self.data = offsets, data

    @classmethod
    def from_arrow(cls, texts: pa.Array) -> "Texts":
        """From an Arrow string array (nulls as empty strings)."""
        arr = pc.fill_null(texts, "").cast(pa.large_string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
        return cls(offsets - offsets[0], data[offsets[0] : offsets[-1]].copy())

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode()


@dataclass
class ObjectTables:
    """What the measurement needs of each record, from one scan of the records' metadata: the
    public and attacked records' object sets and the attacked records' captions, in their
    ``IdIndex`` rows (a record the data lacks has no objects and an empty caption). NumPy arrays
    throughout: the tables are built in a Ray task and read by the scoring tasks from the object
    store, never held by the driver."""

    names: list  # the vocabulary: object id -> name (sorted)
    public: IdIndex
    public_objects: ObjectSets
    attacked: IdIndex
    attacked_objects: ObjectSets
    attacked_captions: Texts

    def objects_of(self, row: int) -> list[str]:
        """The object names of an attacked record."""
        return [self.names[j] for j in self.attacked_objects.row(row)]


def _record_batches(data_root: str, batch_rows: int = BATCH_ROWS):
    yield from records.dataset(data_root).to_batches(columns=["id", "objects", "caption"], batch_size=batch_rows)


def _sets(pair_rows: list, pair_objects: list, n: int, vocab_size: int) -> ObjectSets:
    empty = np.zeros(0, np.int64)
    return ObjectSets.from_pairs(np.concatenate(pair_rows) if pair_rows else empty,
                                 np.concatenate(pair_objects) if pair_objects else empty, n, vocab_size)


def object_tables(data_root: str, splits_dir: str, attacked: tuple[str, ...]) -> ObjectTables:
    """Two streaming passes over (id, objects, caption): the vocabulary, then the tables."""
    public = IdIndex(b.column("id") for b in iter_split(splits_dir, "public"))
    att = IdIndex(b.column("id") for s in attacked for b in iter_split(splits_dir, s))
    names = set()
    for batch in _record_batches(data_root):
        ids = batch.column("id")
        used = (public.rows(ids) >= 0) | (att.rows(ids) >= 0)
        names.update(pc.unique(pc.list_flatten(batch.column("objects").filter(pa.array(used)))).to_pylist())
    names.discard(None)
    vocab_names = sorted(names)
    vocab_arr = pa.array(vocab_names, pa.string())
    pairs = {"public": ([], []), "attacked": ([], [])}
    caption_rows, captions = [], []
    for batch in _record_batches(data_root):
        ids = batch.column("id")
        for name, index in (("public", public), ("attacked", att)):
            rows = index.rows(ids)
            hit = rows >= 0
            if hit.any():
                in_batch, objs = _object_pairs(batch.column("objects").filter(pa.array(hit)), vocab_arr)
                pairs[name][0].append(rows[hit][in_batch])
                pairs[name][1].append(objs)
                if name == "attacked":
                    caption_rows.append(rows[hit])
                    captions.append(batch.column("caption").filter(pa.array(hit)))
    # Captions in attacked rows; a record the data lacks gets an empty caption (the appended one).
    found = pa.concat_arrays([c.cast(pa.large_string()) for c in captions] + [pa.array([""], pa.large_string())])
    at = np.full(len(att), len(found) - 1, dtype=np.int64)
    if caption_rows:
        rows = np.concatenate(caption_rows)
        at[rows] = np.arange(len(rows))
    return ObjectTables(vocab_names, public, _sets(*pairs["public"], len(public), len(vocab_names)), att,
                        _sets(*pairs["attacked"], len(att), len(vocab_names)),
                        Texts.from_arrow(found.take(pa.array(at))))
