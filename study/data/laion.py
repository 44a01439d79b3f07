"""Readers for LAION-style inputs as img2dataset writes them, mapped to the record schema.

img2dataset holds an image-caption subset in one of two layouts, on local disk or object storage:

- ``webdataset``: ``NNNNN.tar`` shards holding ``key.jpg``, ``key.txt`` and ``key.json`` per sample
  (only successful downloads; the ``NNNNN.parquet`` metadata beside each tar is not read);
- ``parquet``: ``NNNNN.parquet`` shards with columns ``key``, ``jpg`` (image bytes), ``caption``,
  ``status``, ... where a failed download keeps its row with a null image.

Ground truth comes from a side Parquet table keyed by record key (``key`` or ``id``) with
``objects`` (list of strings), and optionally ``label`` (int) and ``boxes`` (the record schema's
BOX_TYPE), as a detector run over the subset would write it.

The ``read_*`` functions return Ray Datasets; the ``*_batch`` functions they map are plain
pyarrow-in, pyarrow-out. Images stay encoded: each is opened once to read its size from the header
and to check that it decodes (JPEG at 1/8 scale: every byte of the stream is still parsed, so a
truncated or corrupt file fails as it would at full size, at a fraction of the cost).
"""
from __future__ import annotations

import io
import json
import math
import posixpath
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from study import storage
from study.core.quality import NOT_DOWNLOADED, OK, UNDECODABLE
from study.data.model_input import to_rgb
from study.data.records import BOX_TYPE, MATCHED, STATUS, to_record_schema  # noqa: F401  (the readers' contract)
from study.errors import DataError

IMAGE_COLUMNS = ("jpg", "png", "webp", "jpeg")  # img2dataset's encode formats, as column or file suffix
KEY_COLUMNS = ("key", "id")  # how the side table may name the record key
SIDE_COLUMNS = {"objects": pa.list_(pa.string()), "label": pa.int32(), "boxes": pa.list_(BOX_TYPE)}
JOIN_PARTITION_BYTES = 256 * 2**20


# -- listing ------------------------------------------------------------------------------------
def input_files(uri: str, suffix: str, exclude: str | None = None) -> list[tuple[str, int]]:
    """(URI, size) of the files under ``uri`` ending in ``suffix``, in name order, from one listing;
    files under ``exclude`` (a side table stored among the shards) are left out."""
    if not storage.exists(uri):
        raise DataError(f"input path does not exist: {uri}")
    fs, path = storage.fs_and_path(uri)
    skip = storage.fs_and_path(storage.absolute(exclude))[1].rstrip("/") if exclude else None
    found = {path: fs.info(path)} if fs.isfile(path) else fs.find(path, detail=True)
    out = []
    for p, info in sorted(found.items()):
        name = posixpath.basename(p)
        if not name.endswith(suffix) or name.startswith(("_", ".")):
            continue
        if skip and (p == skip or p.startswith(skip + "/")):
            continue
        out.append((p if storage.is_local(uri) else fs.unstrip_protocol(p), int(info["size"])))
    if not out:
        raise DataError(f"no {suffix} files found under {uri}")
    return out


def fingerprint(files: list[tuple[str, int]], root: str) -> list[tuple[str, int]]:
    """(path relative to ``root``, size): changes when input files are added, removed or resized."""
    cut = len(storage.absolute(root).rstrip("/")) + 1
    return [(uri[cut:] if len(uri) >= cut else posixpath.basename(uri), size) for uri, size in files]


def join_partitions(total_bytes: int, cpus: int) -> int:
    """Hash-join partitions: at least one per CPU, so the join's reduce and the writes after it run
    in parallel, and more for large inputs, so a partition holds about JOIN_PARTITION_BYTES."""
    return max(1, cpus, math.ceil(total_bytes / JOIN_PARTITION_BYTES))


def first_schema(uri: str) -> pa.Schema:
    with storage.open_read(uri) as fh:
        return pq.read_schema(fh)


# -- per-batch mapping (no Ray) -------------------------------------------------------------------
def inspect_image(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) of encoded image bytes if they decode, else None."""
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.draft("RGB", (1, 1))  # JPEG only: decode at the smallest scale
            im.load()
            to_rgb(im)  # any mode must become RGB: what model_input does with it
        return size
    except Exception:  # PIL raises several types for bad bytes
        return None


def records_batch(ids: list, images: list, captions: list, downloaded: list[bool]) -> pa.Table:
    """Columns of the record schema that the inputs fill, plus the read status per record."""
    sizes = [inspect_image(b) if d else None for b, d in zip(images, downloaded)]
    status = [OK if s else (UNDECODABLE if d else NOT_DOWNLOADED) for s, d in zip(sizes, downloaded)]
    return pa.table({
        "id": pa.array([str(i) for i in ids], pa.string()),
        "image": pa.array([b if d else None for b, d in zip(images, downloaded)], pa.binary()),
        "width": pa.array([s[0] if s else None for s in sizes], pa.int32()),
        "height": pa.array([s[1] if s else None for s in sizes], pa.int32()),
        "caption": pa.array(captions, pa.string()),
        STATUS: pa.array(status, pa.string()),
    })


def _image_of_row(row: dict) -> bytes | None:
    return next((row[c] for c in IMAGE_COLUMNS if row.get(c) is not None), None)


def _text(data) -> str | None:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def webdataset_batch(batch: pa.Table) -> pa.Table:
    """Samples of img2dataset tars (``__key__`` and raw bytes per file suffix) -> records.
    The caption is ``key.txt``, else the json's ``caption``."""
    out_ids, images, captions, downloaded = [], [], [], []
    for row in batch.to_pylist():
        caption = _text(row.get("txt"))
        if caption is None and row.get("json") is not None:
            caption = json.loads(_text(row["json"])).get("caption")
        image = _image_of_row(row)
        out_ids.append(str(row["__key__"]).rsplit("/", 1)[-1])  # tar members may sit in folders
        images.append(image)
        captions.append(caption)
        downloaded.append(image is not None)
    return records_batch(out_ids, images, captions, downloaded)


def parquet_batch(batch: pa.Table, image_column: str) -> pa.Table:
    """Rows of img2dataset's Parquet output -> records; failed downloads (status other than
    ``success``, or no image) are marked, not dropped, so the stage can count them."""
    images = batch.column(image_column).to_pylist()
    ok = [b is not None for b in images]
    if "status" in batch.column_names:
        ok = [o and s == "success" for o, s in zip(ok, batch.column("status").to_pylist())]
    captions = batch.column("caption").to_pylist() if "caption" in batch.column_names else [None] * batch.num_rows
    return records_batch(batch.column("key").to_pylist(), images, captions, ok)


def side_batch(batch: pa.Table, key: str) -> pa.Table:
    """Side-table rows -> (id, objects, label, boxes, _matched) in the record schema's types."""
    n = batch.num_rows
    cols = {"id": batch.column(key).cast(pa.string())}
    for name, typ in SIDE_COLUMNS.items():
        cols[name] = batch.column(name).cast(typ) if name in batch.column_names else pa.nulls(n, typ)
    cols[MATCHED] = pa.array([True] * n, pa.bool_())
    return pa.table(cols)


# -- readers (Ray Data) ---------------------------------------------------------------------------
def _read_args(files: list[tuple[str, int]]) -> tuple:
    return storage.arrow_fs_paths([u for u, _ in files])


def read_webdataset(files: list[tuple[str, int]]):
    """img2dataset tar shards -> Dataset of records and read status: each shard is read whole by a
    task and split into samples member by member (``study.data.tars``: a damaged shard loses only
    what is damaged, and that is quarantined); image bytes stay encoded."""
    import ray

    from study.data.tars import shard_rows

    fs, paths = _read_args(files)
    # One block per tar: Ray's default splits a few files into ~200 tiny blocks, each its own task.
    ds = ray.data.read_binary_files(paths, filesystem=fs, include_paths=True, override_num_blocks=len(paths))
    return ds.map_batches(partial(shard_rows, to_records=webdataset_batch), batch_format="pyarrow", batch_size=1)


def img2dataset_columns(uri: str) -> tuple[str, list[str]]:
    """(image column, columns to read) of img2dataset Parquet output, from its first shard."""
    names = first_schema(uri).names
    image = next((c for c in IMAGE_COLUMNS if c in names), None)
    if "key" not in names or image is None:
        raise DataError(f"{uri} is not img2dataset Parquet output: it needs a 'key' column and an image column "
                        f"({', '.join(IMAGE_COLUMNS)}); has {names}")
    return image, ["key", image] + [c for c in ("caption", "status") if c in names]


def read_img2dataset(files: list[tuple[str, int]]):
    """img2dataset Parquet shards -> Dataset of records and read status; only the columns
    the records need are read."""
    import ray

    image, columns = img2dataset_columns(files[0][0])
    fs, paths = _read_args(files)
    ds = ray.data.read_parquet(paths, filesystem=fs, override_num_blocks=len(paths)).select_columns(columns)
    return ds.map_batches(partial(parquet_batch, image_column=image), batch_format="pyarrow")


def side_columns(uri: str) -> tuple[str, list[str]]:
    """(key column, ground-truth columns) of a side table, checked against the record schema's types."""
    schema = first_schema(uri)
    key = next((c for c in KEY_COLUMNS if c in schema.names), None)
    present = [c for c in SIDE_COLUMNS if c in schema.names]
    if key is None or not present:
        raise DataError(f"side table {uri} needs a 'key' (or 'id') column and at least one of "
                        f"{list(SIDE_COLUMNS)}; has {schema.names}")
    for name in present:
        try:
            pa.nulls(0, schema.field(name).type).cast(SIDE_COLUMNS[name])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"side table {uri}: column '{name}' is {schema.field(name).type}, "
                            f"expected {SIDE_COLUMNS[name]}") from None
    return key, present


def read_objects(files: list[tuple[str, int]]):
    """The side table -> Dataset of (id, objects, label, boxes, _matched)."""
    import ray

    key, present = side_columns(files[0][0])
    fs, paths = _read_args(files)
    return ray.data.read_parquet(paths, filesystem=fs).select_columns([key] + present).map_batches(
        partial(side_batch, key=key), batch_format="pyarrow")
