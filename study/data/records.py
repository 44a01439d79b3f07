"""The record schema (docs/concepts/index.md) and Parquet shard I/O on any fsspec path.

A record: stable ``id``, encoded ``image`` bytes (PNG here), ``width``/``height``, optional
foreground ``label``, optional object ``boxes`` (pixel x0, y0, x1, y1 with a label each), optional
``caption`` and ``objects`` (object-label set).
"""
from __future__ import annotations

import io
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from PIL import Image

from study import storage
from study.core.quality import has_text  # noqa: F401  (the readers' and stages' caption rule)
from study.errors import DataError

BOX_TYPE = pa.struct(
    [("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32()), ("label", pa.int32())]
)
RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("label", pa.int32()),
        ("boxes", pa.list_(BOX_TYPE)),
        ("caption", pa.string()),
        ("objects", pa.list_(pa.string())),
    ]
)
STATUS = "_status"  # readers' per-record read status (core.quality: ok or a read reason), never stored
MATCHED = "_matched"  # set on side-table rows, so a left join leaves it null for records without them


def read_image_file(fs, path: str) -> tuple[bytes | None, str]:
    """(bytes, ``ok``) of an image file, or (None, read reason): ``missing_image`` when it is not
    there, ``unreadable`` when it is but cannot be read (permissions, a folder by that name, a
    failing store). Decoding is checked separately."""
    from study.core import quality

    try:
        return fs.cat_file(path), quality.OK
    except FileNotFoundError:
        return None, quality.MISSING_IMAGE
    except Exception:  # the file is there but unusable
        return None, quality.UNREADABLE


def to_record_schema(table: pa.Table) -> pa.Table:
    """The record schema's columns in order, cast; columns the input lacks are null."""
    n = table.num_rows
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
            for f in RECORD_SCHEMA]
    return pa.Table.from_arrays(cols, schema=RECORD_SCHEMA)


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless, so tests can compare pixels)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB."""
    from study.data.model_input import to_rgb

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(to_rgb(im))


def write_shard(uri: str, rows: dict[str, list]) -> None:
    """Write one Parquet shard of records (columns as lists) to any fsspec URI."""
    table = pa.table(rows, schema=RECORD_SCHEMA)
    with storage.open_atomic(uri, "wb") as fh:
        pq.write_table(table, fh)


def shard_uris(root: str) -> list[str]:
    """The record shards under ``root`` in name order; a clear error if there are none."""
    if not storage.exists(root):
        raise DataError(f"input path does not exist: {root}")
    files = [u for u in storage.list_files(root) if u.endswith(".parquet")]
    if not files:
        raise DataError(f"no .parquet record shards found under {root}")
    return files


def fingerprint(root: str) -> list[tuple[str, int]]:
    """(name, size) of every record shard: changes when input files are added, removed or rewritten
    with another size, so stages built on them rerun."""
    out = []
    for uri in shard_uris(root):
        fs, path = storage.fs_and_path(uri)
        out.append((uri.rsplit("/", 1)[-1], int(fs.size(path))))
    return out


def dataset(root: str) -> pads.Dataset:
    """A pyarrow dataset over the record shards, checked against the record schema."""
    uris = shard_uris(root)
    fs, paths = storage.arrow_fs_paths(uris)
    ds = pads.dataset(paths, filesystem=fs, format="parquet")
    missing = [f.name for f in RECORD_SCHEMA if f.name in ("id", "image", "width", "height") and f.name not in ds.schema.names]
    if missing:
        raise DataError(f"record shards under {root} lack required column(s) {missing}")
    for f in RECORD_SCHEMA:
        if f.name in ds.schema.names and not fits(ds.schema.field(f.name).type, f.type):
            raise DataError(f"record shards under {root}: column '{f.name}' is {ds.schema.field(f.name).type}, "
                            f"expected {f.type}")
    return ds


def fits(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type ``actual`` holds values of the record schema's ``expected`` type:
    the same kind of value at any width (int64 labels, double or large-list boxes), lists and
    structs element by element; an all-null column fits anything. Arrow casts strings to numbers
    and drops missing struct fields, so its cast rules would let a text label or a box without
    its label through."""
    t = pa.types
    if t.is_null(actual) or actual == expected:
        return True
    if t.is_dictionary(actual):
        return fits(actual.value_type, expected)
    if t.is_integer(expected):
        return t.is_integer(actual)
    if t.is_floating(expected):
        return t.is_integer(actual) or t.is_floating(actual)
    if t.is_string(expected):
        return t.is_string(actual) or t.is_large_string(actual) or t.is_string_view(actual)
    if t.is_binary(expected):
        return t.is_binary(actual) or t.is_large_binary(actual) or t.is_binary_view(actual)
    if t.is_list(expected):
        lists = t.is_list(actual) or t.is_large_list(actual) or t.is_fixed_size_list(actual) or t.is_list_view(actual)
        return lists and fits(actual.value_type, expected.value_type)
    if t.is_struct(expected):
        if not t.is_struct(actual):
            return False
        names = [actual.field(i).name for i in range(actual.num_fields)]
        return all(f.name in names and fits(actual.field(f.name).type, f.type) for f in expected)
    return False


def read_records(root: str, ids: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
    """Records whose id is in ``ids`` (any order), read with a pushed-down filter."""
    ds = dataset(root)
    cols = list(columns) if columns else None
    return ds.to_table(columns=cols, filter=pc.field("id").isin(pa.array(list(ids), pa.string())))


def iter_boxes(boxes_column: pa.ChunkedArray | pa.Array) -> Iterator[list[tuple[float, float, float, float]]]:
    """Per record, its boxes as (x0, y0, x1, y1) tuples; null lists become empty."""
    for item in boxes_column.to_pylist():
        yield [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in (item or [])]
