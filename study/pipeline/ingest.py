"""Stage ``data``: make, check or ingest the records, one ``SOURCES`` entry per ``data.source``.

- ``synthetic``: the generator's record shards, written by Ray tasks (study.data.synth_write).
- ``parquet``: record-schema shards under ``data.path``, read in place; a Ray Data map checks that
  every image decodes.
- ``webdataset`` / ``img2dataset``: img2dataset's tar or Parquet output under ``data.path`` is
  ingested once into record-schema Parquet under the run (``<run>/data/records/``) by one Ray Data
  pipeline: read (images stay encoded) -> map to the record schema -> left join with the side table
  ``data.objects`` on the record key -> write from the tasks (``RecordSink``), which count what
  they wrote. The driver sees only those counts.

Why ingest rather than read the tars in place: the later stages read the records several times
(splits, train, embed, measure, report) and some by id (training sets, galleries, utility). Parquet
serves that with column projection and id filters; a tar shard has no columns and must be read end
to end to find one sample. Ingesting costs one pass and a copy; every later stage stays unchanged.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import Datasink

from study import storage
from study.config import DataConfig
from study.data import laion, records, synth_write, synthetic
from study.errors import DataError
from study.pipeline.context import RunContext

FIRST_IDS = 5  # how many offending ids an error names


def _bad_message(bad: int, total: int, where: str, first: list[str]) -> str:
    return (f"{bad} of {total} records under {where} have images that cannot be decoded "
            f"(first: {', '.join(map(str, first))}); fix or remove them")


# -- synthetic --------------------------------------------------------------------------------
def generate(ctx: RunContext) -> dict:
    cfg = ctx.cfg.data
    root = ctx.data_root
    storage.remove(root)  # a half-written earlier attempt must not leave stray shards
    def log(done: int, shards: int, n: int) -> None:
        ctx.log("data", f"wrote {done}/{shards} shards ({n}/{cfg.num_images} records)")

    out = synth_write.write_synthetic(cfg, "records", root, progress=synth_write.throttled(log))
    # Class names and a prompt in the captions' words: zero-shot utility of the VLM study uses them.
    names = [synthetic.class_name(c) for c in range(cfg.num_classes)]
    return {"source": "synthetic", "path": root, "records": cfg.num_images, "shards": out["shards"],
            "label_names": names, "prompt": synthetic.PROMPT}


# -- record shards in place -------------------------------------------------------------------
def _undecodable(batch: pa.Table) -> pa.Table:
    ids = [i for i, b in zip(batch.column("id").to_pylist(), batch.column("image").to_pylist())
           if laion.inspect_image(b) is None]
    return pa.table({"id": pa.array(ids, pa.string())})


def check_in_place(ctx: RunContext) -> dict:
    root = ctx.data_root
    total = records.dataset(root).count_rows()  # from the footers; a DataError for a bad path or schema
    fs, paths = storage.arrow_fs_paths(records.shard_uris(root))
    bad = ray.data.read_parquet(paths, filesystem=fs, override_num_blocks=len(paths)).select_columns(
        ["id", "image"]).map_batches(_undecodable, batch_format="pyarrow").materialize()  # keeps bad ids only
    n_bad = bad.count()
    if n_bad:  # every later stage decodes images: stop here, naming them, not in a worker's traceback
        raise DataError(_bad_message(n_bad, total, root, [r["id"] for r in bad.take(FIRST_IDS)]))
    ctx.log("data", f"using {total} records from {root} (every image decodes)")
    return {"source": "parquet", "path": root, "records": total}


# -- img2dataset outputs ----------------------------------------------------------------------
class RecordSink(Datasink):
    """Writes each write task's blocks as record shards ``part-<task>-<k>.parquet`` of at most
    ``rows_per_shard`` records (a retried task rewrites the same files) and returns the task's
    counts; the stage reads their sums."""

    def __init__(self, root: str, rows_per_shard: int):
        self.root = root
        self.rows_per_shard = rows_per_shard
        self.counts: dict = {}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        counts = {"read": 0, laion.OK: 0, laion.NOT_DOWNLOADED: 0, laion.UNDECODABLE: 0, "matched": 0, "bad_ids": []}
        shards = _ShardWriter(self.root, f"part-{ctx.task_idx:05d}", self.rows_per_shard)
        with shards:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                for key, n in laion.status_counts(table).items():
                    counts[key] += n
                counts["read"] += table.num_rows
                status = table.column(laion.STATUS)
                if len(counts["bad_ids"]) < FIRST_IDS:
                    bad = table.filter(pc.equal(status, laion.UNDECODABLE)).column("id").to_pylist()
                    counts["bad_ids"] += bad[: FIRST_IDS - len(counts["bad_ids"])]
                shards.write(laion.to_record_schema(table.filter(pc.equal(status, laion.OK))))
        return counts

    def on_write_complete(self, write_result) -> None:
        total: dict = {}
        for counts in write_result.write_returns:
            for key, value in counts.items():
                total[key] = total.get(key, 0 if key != "bad_ids" else []) + value
        total["bad_ids"] = total.get("bad_ids", [])[:FIRST_IDS]
        self.counts = total


class _ShardWriter:
    """Streams record tables into ``<prefix>-NNN.parquet`` files, starting a new file every ``rows``
    records; no file for no records."""

    def __init__(self, root: str, prefix: str, rows: int):
        self.root, self.prefix, self.rows = root, prefix, rows
        self.files = contextlib.ExitStack()
        self.writer, self.in_file, self.count = None, 0, 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                uri = storage.join(self.root, f"{self.prefix}-{self.count:03d}.parquet")
                fh = self.files.enter_context(storage.open_atomic(uri, "wb"))
                self.writer = self.files.enter_context(pq.ParquetWriter(fh, records.RECORD_SCHEMA))
                self.count += 1
            take = min(table.num_rows, self.rows - self.in_file)
            self.writer.write_table(table.slice(0, take))
            table, self.in_file = table.slice(take), self.in_file + take
            if self.in_file == self.rows:
                self.files.close()
                self.files, self.writer, self.in_file = contextlib.ExitStack(), None, 0

    def __enter__(self) -> "_ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.files.__exit__(*exc)


@dataclass(frozen=True)
class Inputs:
    """The files an ingest reads: shards and the optional side table, as (URI, size)."""

    shards: list
    objects: list

    @classmethod
    def of(cls, cfg: DataConfig, suffix: str) -> "Inputs":
        path = storage.absolute(cfg.path)
        objects = storage.absolute(cfg.objects) if cfg.objects else None
        shards = laion.input_files(path, suffix, exclude=objects)  # a DataError for a missing path
        return cls(shards, laion.input_files(objects, ".parquet") if objects else [])


@dataclass(frozen=True)
class Img2datasetLayout:
    """One of img2dataset's output layouts: its shard files and how to read them."""

    suffix: str
    read: Callable  # [(URI, size)] -> Dataset of records with their read status
    has_caption: Callable[[str], bool]  # from the first shard's schema

    def fingerprint(self, cfg: DataConfig) -> dict:
        inputs = Inputs.of(cfg, self.suffix)
        out = {"shards": laion.fingerprint(inputs.shards, storage.absolute(cfg.path))}
        if inputs.objects:
            out["objects"] = laion.fingerprint(inputs.objects, storage.absolute(cfg.objects))
        return out

    def columns(self, cfg: DataConfig) -> set[str]:
        inputs = Inputs.of(cfg, self.suffix)
        cols = {"id", "image", "width", "height"} | ({"caption"} if self.has_caption(inputs.shards[0][0]) else set())
        return cols | (set(laion.side_columns(inputs.objects[0][0])[1]) if inputs.objects else set())


def ingest(ctx: RunContext, layout: Img2datasetLayout) -> dict:
    cfg = ctx.cfg.data
    root = ctx.data_root
    inputs = Inputs.of(cfg, layout.suffix)
    storage.remove(root)  # a half-written earlier attempt must not leave stray shards
    size = sum(s for _, s in inputs.shards)
    ctx.log("data", f"ingesting {len(inputs.shards)} {layout.suffix} files ({size / 2**20:.1f} MiB) from {cfg.path}")
    ds = layout.read(inputs.shards)
    if inputs.objects:
        partitions = laion.join_partitions(size, int(ray.cluster_resources().get("CPU", 1)))
        ds = ds.join(laion.read_objects(inputs.objects), "left_outer", num_partitions=partitions, on=("id",))
    sink = RecordSink(root, cfg.shard_size)
    ds.write_datasink(sink)
    c = sink.counts
    if c.get(laion.UNDECODABLE):
        raise DataError(_bad_message(c[laion.UNDECODABLE], c["read"], cfg.path, c["bad_ids"]))
    if not c.get(laion.OK):
        raise DataError(f"no record with an image under {cfg.path} ({c.get('read', 0)} read)")
    summary = {
        "source": cfg.source, "path": root, "input": cfg.path, "objects": cfg.objects,
        "records": c[laion.OK], "records_read": c["read"], "records_written": c[laion.OK],
        "not_downloaded": c[laion.NOT_DOWNLOADED],
        "with_objects": c["matched"], "without_objects": c[laion.OK] - c["matched"],
        "shards": len(records.shard_uris(root)),
    }
    ctx.log("data", f"ingested {summary['records_written']} of {summary['records_read']} records into {root} "
                    f"({summary['not_downloaded']} not downloaded); side table: {summary['with_objects']} with "
                    f"objects, {summary['without_objects']} without")
    return summary


# -- the registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    run: Callable[[RunContext], dict]  # the data stage
    inputs: Callable[[DataConfig], object]  # what reruns are keyed on besides the config (JSON-able)
    columns: Callable[[DataConfig], set[str] | None]  # record columns it fills (None: all), checked up front

    @classmethod
    def img2dataset(cls, layout: Img2datasetLayout) -> "Source":
        return cls(partial(ingest, layout=layout), layout.fingerprint, layout.columns)


SOURCES: dict[str, Source] = {
    "synthetic": Source(generate, lambda cfg: None, lambda cfg: None),
    "parquet": Source(check_in_place, lambda cfg: records.fingerprint(storage.absolute(cfg.path)),
                      lambda cfg: set(records.dataset(storage.absolute(cfg.path)).schema.names)),
    # A tar's members are only known by reading it: img2dataset always writes key.txt.
    "webdataset": Source.img2dataset(Img2datasetLayout(".tar", laion.read_webdataset, lambda uri: True)),
    "img2dataset": Source.img2dataset(Img2datasetLayout(
        ".parquet", laion.read_img2dataset, lambda uri: "caption" in laion.img2dataset_columns(uri)[1])),
}


def run_data(ctx: RunContext) -> dict:
    return SOURCES[ctx.cfg.data.source].run(ctx)


def input_fingerprint(cfg: DataConfig):
    return SOURCES[cfg.source].inputs(cfg)

