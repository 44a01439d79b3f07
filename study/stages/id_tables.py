"""Per-record tables the measure stage joins search results with (the records' labels, object sets
and captions), split into id ranges ("blocks"), each built by a Ray task and left in the object
store. A scoring task gathers, for one batch of queries, the records its neighbour or query ids
name, one block at a time: no task, and not the driver, holds a whole side. A study whose side fits
in one block (``measure.records_per_table_block``) has one, read whole with no copy.

This is a join by id, range-partitioned on the table's side: each batch of ids is routed to the
blocks by the blocks' bounds (one binary search), then looked up in each block's own ``IdIndex``.
A shuffle join (every neighbour row sent to the block of its id and back) would move k rows per
query through the object store; here the batch's ids stay in the task and only the blocks it
touches are read, shared by every task of a node.

A block's payload has ``index`` (an ``IdIndex`` of its records) and ``take(rows, context)``, which
returns the records those rows hold in a form whose class has ``concat(parts, context)``; the
context is the block's own (e.g. its local object vocabulary's place in the study's), given by
whoever built the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from study import storage
from study.data.loading import iter_split, split_uri
from study.data.lookup import keys_of
from study.stages.outcome_files import WHOLE, Block, id_blocks


@dataclass(frozen=True)
class Blocks:
    """A side's table in id ranges: block j holds the ids in ``bounds[j]`` (lowest, past the last;
    None: unbounded), its payload ``parts[j]`` (in memory, or a Ray ObjectRef to it) and its
    context ``contexts[j]`` for ``take``."""

    bounds: tuple
    parts: tuple
    contexts: tuple

    @classmethod
    def one(cls, payload, context=None) -> "Blocks":
        """A side held whole in one block (in memory: tests, small inputs)."""
        return cls((WHOLE,), (payload,), (context,))

    def payload(self, j: int):
        part = self.parts[j]
        return ray.get(part) if isinstance(part, ray.ObjectRef) else part

    def gather(self, ids) -> tuple[np.ndarray, object]:
        """(rows (n,) int64 of each id in the records gathered, -1 for an id no block holds and for
        None / null; the gathered records). ``ids``: a sequence or an Arrow string array; repeats
        are gathered once each time they appear (a batch's neighbours)."""
        present, keys = keys_of(ids)
        out = np.full(len(ids), -1, dtype=np.int64)
        if len(self.parts) == 1:  # the whole side in one block: its records as they are, no copy
            block = self.payload(0)
            out[present] = block.index.rows_of_keys(keys)
            return out, block.whole(self.contexts[0])
        starts = np.asarray([lo.encode() for lo, _ in self.bounds[1:]], dtype=bytes)
        which = np.searchsorted(starts, keys, side="right") if len(keys) else np.zeros(0, np.int64)
        found = np.full(len(keys), -1, dtype=np.int64)
        pieces, offset, kind = [], 0, None
        for j in range(len(self.parts)):
            sel = np.flatnonzero(which == j)
            if not len(sel) and (kind is not None or j < len(self.parts) - 1):
                continue
            block = self.payload(j)
            rows = block.index.rows_of_keys(keys[sel])
            ok = rows >= 0
            pieces.append(block.take(rows[ok], self.contexts[j]))
            kind = type(pieces[-1])
            found[sel[ok]] = offset + np.arange(int(ok.sum()))
            offset += int(ok.sum())
            del block  # one block at a time
        out[present] = found
        return out, kind.concat(pieces, self.contexts[0])


def split_rows(splits_dir: str, splits) -> int:
    """How many records the member files of ``splits`` hold, from their footers."""
    total = 0
    for split in splits:
        uri = split_uri(splits_dir, split)
        files = [u for u in storage.list_files(uri) if u.endswith(".parquet")] if storage.exists(uri) else []
        fs, paths = storage.arrow_fs_paths(files)
        total += sum(pq.ParquetFile(fs.open_input_file(p)).metadata.num_rows for p in paths)
    return total


def plan_bounds(splits_dir: str, splits: tuple, per_block: int) -> list[Block]:
    """The id ranges of a side (the records of ``splits``), about ``per_block`` records each, from
    a sample of the member files' ids; one range (``WHOLE``) when the side fits in one block."""
    wanted = -(-split_rows(splits_dir, splits) // per_block)
    return id_blocks([split_uri(splits_dir, s) for s in splits], wanted) if wanted > 1 else [WHOLE]


def in_block(column: pa.Array, block: Block) -> pa.Array:
    """A boolean mask of the ids of ``column`` within ``block``."""
    lo, hi = block
    mask = pc.is_valid(column)
    if lo is not None:
        mask = pc.and_(mask, pc.greater_equal(column, lo))
    if hi is not None:
        mask = pc.and_(mask, pc.less(column, hi))
    return pc.fill_null(mask, False)


def split_batches(splits_dir: str, splits, block: Block, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Record batches (id, label) of the members of ``splits`` whose ids lie in ``block``, in file
    order."""
    for split in splits:
        for batch in iter_split(splits_dir, split, batch_rows):
            yield batch if block == WHOLE else batch.filter(in_block(batch.column("id"), block))


def build(make: Callable, bounds: list[Block], *args) -> tuple[Blocks, list]:
    """One task per id range, ``make(block, *args) -> (summary, payload)``: the payloads stay in
    the object store; returns the blocks (contexts None: set them with ``with_contexts``) and the
    summaries' refs (small: a block's vocabulary), for the caller to get once every side is
    submitted."""
    task = ray.remote(num_cpus=1, num_returns=2)(make)
    refs = [task.remote(block, *args) for block in bounds]
    return Blocks(tuple(bounds), tuple(payload for _, payload in refs), (None,) * len(bounds)), [s for s, _ in refs]


def with_contexts(blocks: Blocks, contexts: list) -> Blocks:
    return Blocks(blocks.bounds, blocks.parts, tuple(contexts))


def log_blocks(ctx, what: str, sides: dict) -> None:
    """One line in the stage's log when a side is in more than one block."""
    if any(len(b.parts) > 1 for b in sides.values()):
        ctx.log("measure", f"{what} in id ranges of about {ctx.cfg.measure.records_per_table_block} records "
                           "(measure.records_per_table_block): " + ", ".join(f"{side} {len(b.parts)}" for side, b in sides.items()))
