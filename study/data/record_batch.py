"""Rows read from an input -> the record schema's columns plus each record's read status: the
part the COCO, VOC-folder and Hugging Face readers share (each reads its own rows and annotations).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import pyarrow as pa

from study.core import quality
from study.data.laion import inspect_image
from study.data.records import RECORD_SCHEMA, STATUS

READ_THREADS = 16  # an object store answers each GET in tens of ms: overlap them within a batch

T = TypeVar("T")
R = TypeVar("R")


def read_each(read: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``read`` of every item on a pool of threads (image reads wait on storage, not the CPU)."""
    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(items)))) as pool:
        return list(pool.map(read, items))


def to_records(columns: Mapping[str, pa.Array | pa.ChunkedArray | list], images: Sequence[tuple[bytes | None, str]],
               annotation_ok: Iterable[bool] | None = None) -> pa.Table:
    """The record schema's columns (those not in ``columns`` null) plus the read status.

    ``images``: per record, (image bytes or None, read status). Width and height come from the
    image, since boxes are in its pixel frame whatever the annotations declare; an image that does
    not decode is ``undecodable``, and an image that cannot be used takes precedence over a bad
    annotation (``annotation_ok`` False: ``bad_annotation``). Only usable records keep their image.
    """
    sizes = [inspect_image(data) for data, _ in images]
    status = []
    for (_, s), size, ok in zip(images, sizes, annotation_ok if annotation_ok is not None else repeat(True)):
        s = quality.UNDECODABLE if s == quality.OK and size is None else s
        status.append(quality.BAD_ANNOTATION if s == quality.OK and not ok else s)
    cols = {
        **columns,
        "image": pa.array([d if s == quality.OK else None for (d, _), s in zip(images, status)], pa.binary()),
        "width": pa.array([size[0] if size else None for size in sizes], pa.int32()),
        "height": pa.array([size[1] if size else None for size in sizes], pa.int32()),
    }
    n = len(images)

    def column(f: pa.Field):
        value = cols.get(f.name)
        if value is None:
            return pa.nulls(n, f.type)
        return value.cast(f.type) if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(value, f.type)

    return pa.Table.from_arrays([column(f) for f in RECORD_SCHEMA] + [pa.array(status, pa.string())],
                                names=RECORD_SCHEMA.names + [STATUS])
