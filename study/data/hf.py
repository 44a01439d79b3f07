"""Hugging Face ``datasets`` rows -> the record schema, a batch at a time (``hf_batch``), by a
declared column mapping (``HfConfig.columns``: record field -> column). No Ray; the layouts and
splits are ``hf_layouts``' job, reading them with Ray Data ``hf_read``'s.

Columns left out of the mapping are guessed: id <- ``id``, else the row's key: its index as text
(disk, parquet; stable only while the dataset is unchanged) or its image's path under the split
folder (imagefolder); image <- ``image`` or ``img``; label <- ``label``; caption <- ``caption`` or
``text``. objects, boxes and box_labels are read only when named; a dotted name reaches into a
struct or a list of structs (``objects.bbox`` in the Hub's detection sets). Images may be the
``Image`` feature's {bytes, path}, raw bytes, or a path. A label of -1 (``ClassLabel``'s "no label")
becomes null. Each record is marked with its read status as the other readers do.
"""
from __future__ import annotations

import os
from typing import Mapping

import pyarrow as pa

from study import storage
from study.core import quality
from study.data.record_batch import read_each, to_records
from study.data.records import BOX_TYPE, fits
from study.config import HfConfig  # noqa: F401  (data.hf, re-exported for readers of this module)
from study.errors import DataError

FIELDS = ("id", "image", "label", "caption", "objects", "boxes", "box_labels")
LAYOUT_NAMES = ("disk", "parquet", "imagefolder")  # keys of hf_layouts.DESCRIBERS and hf_read.LAYOUTS
GUESSES = {"id": ("id",), "image": ("image", "img"), "label": ("label",), "caption": ("caption", "text")}
ACCEPTS = {  # record field -> column types it can be read from (``records.fits``: any width)
    "id": (pa.string(), pa.int64()), "image": (pa.binary(), pa.string(), pa.struct([("bytes", pa.binary())])),
    "label": (pa.int64(),), "caption": (pa.string(),), "objects": (pa.list_(pa.string()),),
    "boxes": (pa.list_(BOX_TYPE), pa.list_(pa.list_(pa.float64()))), "box_labels": (pa.list_(pa.int64()),)}
BOX_FORMATS = {"xyxy": lambda x, y, a, b: (x, y, a, b), "xywh": lambda x, y, w, h: (x, y, x + w, y + h)}
KEY = "_key"  # the row's index as text, or its image's path under the split folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
ROWS_PER_BATCH = 256  # as the other readers: a batch of encoded images stays tens of MB
ROWS_PER_PART = 4 * ROWS_PER_BATCH  # rows a disk-layout task reads after opening the folder once


def offline_datasets():
    """The ``datasets`` package, kept off the network: inputs are paths, never Hub names."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    return datasets


# -- the column mapping (pure) --------------------------------------------------------------------
def column_type(schema: pa.Schema, name: str) -> pa.DataType | None:
    """The type of column ``name``, a dotted name reaching into structs and lists of structs."""
    if name in schema.names:
        return schema.field(name).type
    head, *parts = name.split(".")
    t = schema.field(head).type if head in schema.names else None
    for part in parts:
        listed = t is not None and (pa.types.is_list(t) or pa.types.is_large_list(t))
        inner = t.value_type if listed else t
        if inner is None or not pa.types.is_struct(inner) or inner.get_field_index(part) < 0:
            return None
        t = pa.list_(inner.field(part).type) if listed else inner.field(part).type
    return t


def _fits(f: str, t: pa.DataType | None) -> bool:
    return t is not None and any(fits(t, want) for want in ACCEPTS[f])


def resolve(schema: pa.Schema, columns: Mapping[str, str]) -> dict[str, str]:
    """Record field -> column: the named ones checked against ``schema``, the others guessed (a
    guess whose type does not fit is passed over; "" names no column, so nothing is guessed)."""
    shown = [n for n in schema.names if n != KEY]
    out = {}
    for f in FIELDS:
        name = columns.get(f)
        if name is None:
            name = next((c for c in GUESSES.get(f, ()) if _fits(f, column_type(schema, c))), None)
        elif name and column_type(schema, name) is None:
            raise DataError(f"data.hf.columns.{f} names column '{name}', which the dataset lacks; its columns: {shown}")
        elif name and not _fits(f, column_type(schema, name)):
            raise DataError(f"column '{name}' ({column_type(schema, name)}) cannot be the record's {f}: expected "
                            f"one of {[str(w) for w in ACCEPTS[f]]}")
        if name:
            out[f] = name
    if "id" not in out and KEY in schema.names:
        out["id"] = KEY
    for f in ("id", "image"):
        if f not in out:
            raise DataError(f"no usable {f} column (tried {list(GUESSES[f])}); name it in data.hf.columns.{f}; "
                            f"the dataset's columns: {shown}")
    return out


def _values(table: pa.Table, name: str) -> list:
    if name in table.column_names:
        return table.column(name).to_pylist()
    head, *parts = name.split(".")
    values = table.column(head).to_pylist()
    for part in parts:
        values = [_pluck(v, part) for v in values]
    return values


def _pluck(value, part: str):
    if isinstance(value, list):
        return [_pluck(v, part) for v in value]
    return None if value is None else value.get(part)


# -- per-batch mapping (no Ray) -------------------------------------------------------------------
def _read(uri: str) -> tuple[bytes | None, str]:
    try:
        fs, path = storage.fs_and_path(uri)
        return fs.cat_file(path), quality.OK
    except FileNotFoundError:
        return None, quality.MISSING_IMAGE
    except Exception:  # permissions, a folder by that name, a bad URI, a failing store
        return None, quality.UNREADABLE


def image_bytes(value) -> tuple[bytes | None, str]:
    """An image value (``Image`` struct, bytes, path or null) -> (encoded bytes, read status)."""
    if isinstance(value, dict):  # the Image feature: bytes when embedded, else its file
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), quality.OK
    return _read(value) if value else (None, quality.MISSING_IMAGE)


def boxes_of(values: list | None, labels: list | None, box_format: str) -> tuple[list | None, bool]:
    """(BOX_TYPE dicts or None, well-formed): 4-number boxes in ``box_format`` with their labels
    from the parallel ``labels`` (else -1), or the record schema's structs as they are."""
    if values is None:
        return None, True
    if labels is not None and len(labels) != len(values):
        return None, False
    out = []
    for j, b in enumerate(values):
        if isinstance(b, dict):
            out.append(b)
            continue
        if b is None or len(b) != 4 or any(v is None for v in b):
            return None, False
        x0, y0, x1, y1 = BOX_FORMATS[box_format](*b)
        label = -1 if labels is None or labels[j] is None else labels[j]
        out.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1, "label": label})
    return out, True


def hf_batch(batch: pa.Table, mapping: Mapping[str, str], box_format: str = "xyxy") -> pa.Table:
    """Rows of a dataset -> the record schema's columns plus the read status. Width and height come
    from the image; an image that cannot be used takes precedence over malformed boxes."""
    m = resolve(batch.schema, mapping)
    n = batch.num_rows
    get = lambda f: _values(batch, m[f]) if f in m else [None] * n  # noqa: E731
    ids = get("id")
    if None in ids:
        raise DataError(f"column '{m['id']}' holds null ids: name another in data.hf.columns.id")
    boxes = [boxes_of(b, lab, box_format) for b, lab in zip(get("boxes"), get("box_labels"))]
    return to_records({"id": [str(i) for i in ids], "label": [None if v == -1 else v for v in get("label")],
                       "boxes": [b for b, _ in boxes], "caption": get("caption"), "objects": get("objects")},
                      read_each(image_bytes, get("image")), [ok for _, ok in boxes])
