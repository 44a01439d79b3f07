"""The record schema (DESIGN §3) and Parquet shard I/O on any fsspec path.

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
METADATA_COLUMNS = ["id", "width", "height", "label", "boxes"]


def has_text(caption) -> bool:
    """Whether a caption says anything: null and whitespace-only captions do not."""
    return caption is not None and bool(str(caption).strip())


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless, so tests can compare pixels)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


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
    return ds


def undecodable_images(root: str, batch_rows: int = 1024) -> list[str]:
    """Ids of records whose image bytes do not decode, streaming the shards a batch at a time."""
    bad = []
    for batch in dataset(root).to_batches(columns=["id", "image"], batch_size=batch_rows):
        for rid, data in zip(batch.column("id").to_pylist(), batch.column("image").to_pylist()):
            try:
                decode_image(data)
            except Exception:  # PIL raises several types for bad bytes; a null image fails too
                bad.append(rid)
    return bad


def read_metadata(root: str) -> pa.Table:
    """Everything but the image bytes: cheap enough to plan splits and crops in the driver."""
    ds = dataset(root)
    cols = [c for c in METADATA_COLUMNS if c in ds.schema.names]
    return ds.to_table(columns=cols)


def read_records(root: str, ids: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
    """Records whose id is in ``ids`` (any order), read with a pushed-down filter."""
    ds = dataset(root)
    cols = list(columns) if columns else None
    return ds.to_table(columns=cols, filter=pc.field("id").isin(pa.array(list(ids), pa.string())))


def iter_boxes(boxes_column: pa.ChunkedArray | pa.Array) -> Iterator[list[tuple[float, float, float, float]]]:
    """Per record, its boxes as (x0, y0, x1, y1) tuples; null lists become empty."""
    for item in boxes_column.to_pylist():
        yield [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in (item or [])]
