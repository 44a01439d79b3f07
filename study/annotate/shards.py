"""One record shard through an annotator, and what the annotate stage counts of it.

A shard is read a batch of images at a time (memory: one batch, not the shard) and gives two files,
each written whole or not at all (``storage.open_atomic``), so a shard either is done or is
annotated again when the stage resumes:

* its side-table file: ``key`` (the record id), ``objects``, ``boxes``, ``scores``, ``label`` (``detections.side_row``;
  the ``data.objects`` side table's columns, so another study over the same images can read it);
* with ``records``, the same records with the annotator's ``objects`` and ``boxes`` (and ``label``
  unless the label rule is ``none``) in place of the input's;
* with crop tags (``crop_tags``), both get a ``crop_tags`` column: what the annotator finds in each
  record's attacked crop, its foreground masked out.

The counts (``tally``) are what the driver holds: images, objects per image, how many images show
each object, and where the input has objects of its own, the image-level agreement per object
(an object the annotator and the input both name in an image is a true positive; named by the
annotator only, a false positive; by the input only, a false negative), the input's names mapped
through the vocabulary's synonyms. Names outside the vocabulary are counted apart: no annotator
over it can find them.
"""
from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from study import storage
from study.annotate.detections import side_row
from study.annotate.vocabulary import Vocabulary
from study.data.records import BOX_TYPE, RECORD_SCHEMA, to_record_schema

SIDE_SCHEMA = pa.schema([("key", pa.string()), ("objects", pa.list_(pa.string())), ("boxes", pa.list_(BOX_TYPE)),
                         ("scores", pa.list_(pa.float32())), ("label", pa.int32())])


@dataclass(frozen=True)
class ShardOptions:
    """How a shard is annotated: images per forward pass, the label rule, whether the records take
    the annotator's objects (``replace``), and with ``crop`` (the embed stage's crop rule) the tags
    of each record's crop (``crop_tags``), the foreground named by ``label_names`` where the
    records keep the input's labels."""

    batch_size: int
    label_rule: str
    replace: bool
    crop: object = None
    label_names: tuple[str, ...] = ()


def annotate_shard(annotator, vocabulary: Vocabulary, src: str, side: str, records: str | None,
                   opts: ShardOptions) -> dict:
    """Annotate the record shard ``src`` into ``side`` (and ``records``); its counts."""
    from study.annotate.crop_tags import COLUMN, TYPE, crop_tags, foreground_of

    counts = empty_counts()
    side_schema, rec_schema = (SIDE_SCHEMA.append(pa.field(COLUMN, TYPE)), RECORD_SCHEMA.append(pa.field(COLUMN, TYPE))) \
        if opts.crop is not None else (SIDE_SCHEMA, RECORD_SCHEMA)
    foreground = foreground_of(vocabulary, opts.replace, opts.label_names)
    with storage.open_read(src) as fh, storage.open_atomic(side) as side_fh, \
            (storage.open_atomic(records) if records else contextlib.nullcontext()) as rec_fh:
        side_out = pq.ParquetWriter(side_fh, side_schema)
        rec_out = pq.ParquetWriter(rec_fh, rec_schema) if records else None
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=opts.batch_size):
            table = to_record_schema(pa.Table.from_batches([batch]))
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in table.column("image").to_pylist()]
            rows = [side_row(i, d, vocabulary.names, opts.label_rule)
                    for i, d in zip(table.column("id").to_pylist(), annotator(images))]
            side_table = pa.Table.from_pylist(rows, schema=SIDE_SCHEMA)
            tally(counts, rows, table.column("objects").to_pylist(), vocabulary)
            out = _with_annotations(table, side_table, opts.label_rule) if opts.replace else table
            if opts.crop is not None:
                tags = crop_tags(annotator, images, out, vocabulary, opts.crop, foreground)
                side_table, out = side_table.append_column(COLUMN, tags), out.append_column(COLUMN, tags)
                counts["cropped"] += sum(t is not None for t in tags.to_pylist())
            side_out.write_table(side_table)
            if rec_out is not None:
                rec_out.write_table(out)
        side_out.close()
        if rec_out is not None:
            rec_out.close()
    return counts


def _with_annotations(table: pa.Table, side: pa.Table, label_rule: str) -> pa.Table:
    """The records with the side table's objects and boxes (and label, unless the rule is none)."""
    for name in ("objects", "boxes") + (("label",) if label_rule != "none" else ()):
        table = table.set_column(table.schema.get_field_index(name), name, side.column(name).cast(RECORD_SCHEMA.field(name).type))
    return table


# -- counts -------------------------------------------------------------------------------------
def empty_counts() -> dict:
    return {"images": 0, "with_objects": 0, "cropped": 0, "per_image": Counter(), "objects": Counter(),
            "compared": 0, "tp": Counter(), "fp": Counter(), "fn": Counter(), "outside": Counter()}


def tally(counts: dict, rows: list[dict], given: list, vocabulary: Vocabulary) -> None:
    """Add one batch: the side table's rows and the input's own objects (None: the input has none)."""
    for row, theirs in zip(rows, given):
        found = set(row["objects"])
        counts["images"] += 1
        counts["with_objects"] += bool(found)
        counts["per_image"][str(len(found))] += 1
        counts["objects"].update(found)
        if theirs is None:
            continue
        known = {vocabulary.names[i] for i in (vocabulary.canonical(t) for t in theirs) if i is not None}
        counts["outside"].update(t for t in theirs if vocabulary.canonical(t) is None)
        counts["compared"] += 1
        counts["tp"].update(found & known)
        counts["fp"].update(found - known)
        counts["fn"].update(known - found)


def merge(total: dict, part: dict) -> dict:
    """Counts of two sets of shards added (``part`` may have made a JSON round trip)."""
    for key, value in part.items():
        if key == "fingerprint":  # the annotator's (one per stage: its hash covers the weights)
            total.setdefault("fingerprints", set()).add(value)
        elif isinstance(value, dict):
            total[key].update(value)
        else:
            total[key] += value
    return total
