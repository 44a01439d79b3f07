"""Write the synthetic generator's records in parallel, one Ray task per shard.

Three layouts (``LAYOUTS``), each shard holding records ``[shard * shard_size, ...)``:

- ``records``: ``part-NNNNN.parquet`` in the record schema (the synthetic source's data stage);
- ``webdataset``: img2dataset's tar output, ``NNNNN.tar`` with ``key.jpg`` (JPEG, quality 95),
  ``key.txt`` (caption) and ``key.json`` ({key, caption, width, height, status});
- ``parquet``: img2dataset's Parquet output, ``NNNNN.parquet`` with key, jpg, caption, width,
  height and status.

For the two img2dataset layouts the ground truth (objects, label, boxes) goes to a side Parquet
table keyed by ``key``, as a user's detector would write it: each task returns its shard's side
rows and the driver streams them into one file, so it holds one shard's rows at a time, never N.
Record i depends only on (seed, i), so shards can be written in any order.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import tarfile
import time
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from study import storage
from study.config import DataConfig
from study.data import records, synthetic
from study.data.records import BOX_TYPE
from study.errors import StudyError

JPEG_QUALITY = 95  # img2dataset's default
SIDE_SCHEMA = pa.schema([("key", pa.string()), ("objects", pa.list_(pa.string())), ("label", pa.int32()),
                         ("boxes", pa.list_(BOX_TYPE))])
IMG2DATASET_SCHEMA = pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("caption", pa.string()),
                                ("width", pa.int64()), ("height", pa.int64()), ("status", pa.string())])


def shard_columns(cfg: DataConfig, shard: int) -> dict[str, list]:
    """The record-schema columns of one shard (what ``synthetic.iter_shards`` yields for it)."""
    start = shard * cfg.shard_size
    rows = [synthetic.make_record(i, cfg) for i in range(start, min(start + cfg.shard_size, cfg.num_images))]
    return {name: [r[name] for r in rows] for name in records.RECORD_SCHEMA.names}


def to_jpeg(png: bytes) -> bytes:
    """PNG -> JPEG with colour at full resolution (4:4:4): the scenes are small and their colours are
    the captions' words; 4:2:0 subsampling shifts a 16-px scene's pixels by ~30 levels, 4:4:4 by ~3."""
    buf = io.BytesIO()
    Image.fromarray(records.decode_image(png)).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def write_records(uri: str, cols: dict[str, list]) -> None:
    records.write_shard(uri, cols)


def write_tar(uri: str, cols: dict[str, list]) -> None:
    """One webdataset shard: the files of a sample are consecutive, as webdataset readers need."""
    with storage.open_atomic(uri, "wb") as fh, tarfile.open(fileobj=fh, mode="w|") as tar:
        for key, png, caption, w, h in zip(*(cols[c] for c in ("id", "image", "caption", "width", "height"))):
            meta = {"key": key, "caption": caption, "width": w, "height": h, "status": "success"}
            for suffix, data in (("jpg", to_jpeg(png)), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def write_img2dataset_parquet(uri: str, cols: dict[str, list]) -> None:
    n = len(cols["id"])
    table = pa.table({"key": cols["id"], "jpg": [to_jpeg(b) for b in cols["image"]], "caption": cols["caption"],
                      "width": cols["width"], "height": cols["height"], "status": ["success"] * n},
                     schema=IMG2DATASET_SCHEMA)
    with storage.open_atomic(uri, "wb") as fh:
        pq.write_table(table, fh)


@dataclass(frozen=True)
class Layout:
    name: Callable[[int], str]  # shard index -> file name
    write: Callable[[str, dict], None]
    side_table: bool  # ground truth goes to the side table (else it stays in the records)


LAYOUTS = {
    "records": Layout(lambda s: f"part-{s:05d}.parquet", write_records, side_table=False),
    "webdataset": Layout(lambda s: f"{s:05d}.tar", write_tar, side_table=True),
    "parquet": Layout(lambda s: f"{s:05d}.parquet", write_img2dataset_parquet, side_table=True),
}
FORMAT_SOURCES = {"webdataset": "webdataset", "parquet": "img2dataset"}  # img2dataset layout -> data.source


def write_shard(cfg: DataConfig, layout: str, output: str, shard: int) -> tuple[int, pa.Table | None]:
    """Generate and write one shard: (records, side-table rows for the img2dataset layouts)."""
    cols = shard_columns(cfg, shard)
    spec = LAYOUTS[layout]
    spec.write(storage.join(output, spec.name(shard)), cols)
    if not spec.side_table:
        return len(cols["id"]), None
    side = {"key": cols["id"], "objects": cols["objects"], "label": cols["label"], "boxes": cols["boxes"]}
    return len(cols["id"]), pa.table(side, schema=SIDE_SCHEMA)


def write_synthetic(cfg: DataConfig, layout: str, output: str, objects: str | None = None,
                    progress: Callable[[int, int, int], None] | None = None, task_cpus: float = 1.0) -> dict:
    """Write ``cfg.num_images`` records under ``output`` in ``layout``, one Ray task per shard with at
    most a few tasks in flight per CPU; ``progress(shards_done, shards, records_done)`` is called as
    shards finish. The side table goes to ``objects`` (default ``output/objects.parquet``)."""
    import ray

    if layout not in LAYOUTS:
        raise StudyError(f"unknown layout '{layout}'; choose from {sorted(LAYOUTS)}")
    spec = LAYOUTS[layout]
    shards = math.ceil(cfg.num_images / cfg.shard_size)
    side_uri = (objects or storage.join(output, "objects.parquet")) if spec.side_table else None
    task = ray.remote(write_shard).options(num_cpus=task_cpus)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / task_cpus))
    with storage.open_atomic(side_uri, "wb") if side_uri else contextlib.nullcontext() as side_fh:
        side = pq.ParquetWriter(side_fh, SIDE_SCHEMA) if side_uri else None
        pending, submitted, done, written = [], 0, 0, 0
        while done < shards:
            while submitted < shards and len(pending) < window:
                pending.append(task.remote(cfg, layout, output, submitted))
                submitted += 1
            ready, pending = ray.wait(pending, num_returns=1)
            n, rows = ray.get(ready[0])
            if side is not None:
                side.write_table(rows)
            done, written = done + 1, written + n
            if progress:
                progress(done, shards, written)
        if side is not None:
            side.close()
    return {"format": layout, "path": output, "records": cfg.num_images, "shards": shards, "objects": side_uri}


def throttled(log: Callable[[int, int, int], None], every_s: float = 5.0) -> Callable[[int, int, int], None]:
    """A ``progress`` that calls ``log`` for the first and last shard and at most every ``every_s``
    seconds in between (millions of records make thousands of shards)."""
    last = [0.0]

    def call(done: int, shards: int, n: int) -> None:
        now = time.monotonic()
        if done in (1, shards) or now - last[0] >= every_s:
            last[0] = now
            log(done, shards, n)

    return call
