"""The VLM study's object tables: which objects each public and attacked record shows, as sparse
object sets over the vocabulary's ids (``core.object_sets``: memory follows the objects present,
never records x vocabulary), read once from the record shards for the measure stage and the
utility numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from study.core.object_sets import ObjectSets
from study.data import records
from study.data.lookup import IdIndex
from study.frame.context import RunContext
from study.stages.id_tables import Blocks, build, plan_bounds, split_batches, with_contexts

BATCH_ROWS = 65_536  # records per batch


def object_table(ctx: RunContext, ids: list[str]) -> dict[str, tuple[list[str], str]]:
    """id -> (objects, caption) for the given records."""
    table = records.read_records(ctx.data_root, ids, columns=["id", "objects", "caption"])
    return {i: (o or [], c or "") for i, o, c in zip(*(table.column(n).to_pylist() for n in ("id", "objects", "caption")))}


def object_sets(rows: list[list[str]], vocab: dict[str, int]) -> ObjectSets:
    """The object sets of records given by their objects' names; names outside ``vocab`` are left out."""
    return ObjectSets.from_lists([[vocab[o] for o in objs if o in vocab] for objs in rows], len(vocab))


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

    def to_arrow(self) -> pa.Array:
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self.offsets), pa.py_buffer(self.data))

    def take(self, rows: np.ndarray) -> "Texts":
        return Texts.from_arrow(self.to_arrow().take(pa.array(np.asarray(rows, np.int64))))

    @classmethod
    def concat(cls, parts: list["Texts"]) -> "Texts":
        return cls.from_arrow(pa.concat_arrays([p.to_arrow() for p in parts]))


@dataclass(frozen=True)
class ObjectRecords:
    """Records gathered from a side's blocks: their object sets over the study's vocabulary and,
    for the attacked side, their captions (None for the public side)."""

    objects: ObjectSets
    captions: Texts | None

    @classmethod
    def concat(cls, parts: list["ObjectRecords"], context) -> "ObjectRecords":
        captions = None if parts[0].captions is None else Texts.concat([p.captions for p in parts])
        return cls(ObjectSets.concat([p.objects for p in parts], context[1]), captions)


@dataclass(frozen=True)
class ObjectBlock:
    """One id range of a side (``id_tables``): its records' ids, object sets over the block's own
    vocabulary ``names`` (sorted) and captions (the attacked side). The context a scoring task
    reads it with is (the block's object ids in the study's vocabulary, or None where the two are
    the same; the study's vocabulary size)."""

    index: IdIndex
    names: list
    objects: ObjectSets
    captions: Texts | None

    def _sets(self, sets: ObjectSets, context) -> ObjectSets:
        to, size = context
        return sets if to is None else sets.remap(to, size)

    def whole(self, context) -> ObjectRecords:
        return ObjectRecords(self._sets(self.objects, context), self.captions)

    def take(self, rows: np.ndarray, context) -> ObjectRecords:
        return ObjectRecords(self._sets(self.objects.take(rows), context),
                             None if self.captions is None else self.captions.take(rows))


@dataclass(frozen=True)
class ObjectTables:
    """What the measurement needs of each record: the public and attacked records' object sets
    and the attacked records' captions, as blocks of id ranges in the object store
    (``id_tables.Blocks``; a record the data lacks has no objects and an empty caption), and the
    study's object vocabulary (``names``, sorted: object id -> name). Scoring tasks gather the
    records of a batch of ids (``public.gather``, ``attacked.gather``); no task holds a whole side
    unless it fits in one block."""

    names: list
    public: Blocks
    attacked: Blocks

    @classmethod
    def in_memory(cls, names: list, public_ids, public: ObjectSets, attacked_ids, attacked: ObjectSets,
                  captions: Texts) -> "ObjectTables":
        """Tables held whole in memory, one block a side (tests, small inputs)."""
        context = (None, len(names))
        return cls(list(names), Blocks.one(ObjectBlock(IdIndex([public_ids]), list(names), public, None), context),
                   Blocks.one(ObjectBlock(IdIndex([attacked_ids]), list(names), attacked, captions), context))


def _record_batches(data_root: str, block, batch_rows: int = BATCH_ROWS):
    lo, hi = block
    where = None
    if lo is not None:
        where = pads.field("id") >= lo
    if hi is not None:
        where = pads.field("id") < hi if where is None else where & (pads.field("id") < hi)
    yield from records.dataset(data_root).to_batches(columns=["id", "objects", "caption"], filter=where,
                                                     batch_size=batch_rows)


def _object_codes(objects: pa.Array, local: dict) -> tuple[np.ndarray, np.ndarray]:
    """(row in the batch, object code) of every named object of a batch's object lists; codes are
    given to names in the order they are first met (``local``: name -> code, grown here). Each
    batch's names are dictionary-encoded by Arrow: one Python step per distinct name, not per
    object."""
    lengths = pc.fill_null(pc.list_value_length(objects), 0).to_numpy(zero_copy_only=False)
    encoded = pc.list_flatten(objects).dictionary_encode()
    codes = np.asarray([local.setdefault(name, len(local)) for name in encoded.dictionary.to_pylist()], np.int64)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    valid = pc.is_valid(encoded.indices).to_numpy(zero_copy_only=False)
    picked = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)[valid]
    return rows[valid], codes[picked] if len(codes) else np.zeros(0, np.int64)


def object_block(block, data_root: str, splits_dir: str, splits: tuple, captions: bool) -> tuple[list, ObjectBlock]:
    """One id range of a side (the members of ``splits``): its records' object sets from one scan
    of the records' (id, objects, caption) within the range, and captions when asked; returns (the
    block's vocabulary, the block). Runs in a task (``id_tables.build``)."""
    index = IdIndex(b.column("id") for b in split_batches(splits_dir, splits, block))
    local: dict = {}
    pair_rows, pair_codes, caption_rows, found = [], [], [], []
    for batch in _record_batches(data_root, block):
        rows = index.rows(batch.column("id"))
        hit = rows >= 0
        if not hit.any():
            continue
        mask = pa.array(hit)
        in_batch, codes = _object_codes(batch.column("objects").filter(mask), local)
        pair_rows.append(rows[hit][in_batch])
        pair_codes.append(codes)
        if captions:
            caption_rows.append(rows[hit])
            found.append(batch.column("caption").filter(mask).cast(pa.large_string()))
    names = sorted(local)
    place = np.zeros(len(local), np.int64)  # code -> position in the sorted names
    place[[local[n] for n in names]] = np.arange(len(names))
    empty = np.zeros(0, np.int64)
    sets = ObjectSets.from_pairs(np.concatenate(pair_rows) if pair_rows else empty,
                                 place[np.concatenate(pair_codes)] if pair_codes else empty, len(index), len(names))
    texts = None
    if captions:  # in index rows; a record the data lacks gets an empty caption (the appended one)
        found = pa.concat_arrays(found + [pa.array([""], pa.large_string())])
        at = np.full(len(index), len(found) - 1, dtype=np.int64)
        if caption_rows:
            rows = np.concatenate(caption_rows)
            at[rows] = np.arange(len(rows))
        texts = Texts.from_arrow(found.take(pa.array(at)))
    return names, ObjectBlock(index, names, sets, texts)


def object_tables(data_root: str, splits_dir: str, attacked: tuple[str, ...], per_block: int) -> ObjectTables:
    """The public and attacked sides' blocks, each built by a task (``object_block``) over id
    ranges of about ``per_block`` records; the driver gets the blocks' vocabularies (a few thousand
    names each) and the refs."""
    plan = ray.remote(num_cpus=1)(plan_bounds)
    bounds = ray.get([plan.remote(splits_dir, ("public",), per_block), plan.remote(splits_dir, attacked, per_block)])
    public, public_names = build(object_block, bounds[0], data_root, splits_dir, ("public",), False)
    att, att_names = build(object_block, bounds[1], data_root, splits_dir, tuple(attacked), True)
    public_names, att_names = ray.get(public_names), ray.get(att_names)
    names = sorted(set().union(*public_names, *att_names))
    place = {name: j for j, name in enumerate(names)}

    def contexts(per_block_names):
        return [(None if got == names else np.asarray([place[n] for n in got], np.int64), len(names))
                for got in per_block_names]

    return ObjectTables(names, with_contexts(public, contexts(public_names)), with_contexts(att, contexts(att_names)))
