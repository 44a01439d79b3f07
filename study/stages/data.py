"""Stage ``data``: make, check or ingest the records, one ``SOURCES`` entry per ``data.source``.

- ``synthetic``: the generator's record shards, written by Ray tasks (study.data.synth_write).
- ``parquet``: record-schema shards under ``data.path``, read in place when a Ray Data pass finds
  every image decodes and every id unique; else the usable records are copied under the run.
- ``coco``: an image folder with COCO JSON instances and/or captions (``study.data.coco``),
  ingested the same way.
- ``voc``: ImageNet-style class folders with Pascal-VOC XML boxes (``study.data.voc``), ingested
  the same way.
- ``hf``: a Hugging Face dataset (``save_to_disk``, Parquet or imagefolder layout) mapped by
  ``data.hf.columns`` (``study.data.hf``), ingested the same way.
- ``webdataset`` / ``img2dataset``: img2dataset's tar or Parquet output under ``data.path`` is
  ingested once into record-schema Parquet under the run (``<run>/data/records/``) by one Ray Data
  pipeline: read (images stay encoded) -> map to the record schema -> left join with the side table
  ``data.objects`` on the record key -> write from the tasks (``RecordSink``), which count what
  they wrote. The driver sees only those counts.

Nothing read is lost: a record that cannot be used (an image that does not decode, a failed
download, a repeated id, ...: ``core.quality.READ_REASONS``) goes to ``<run>/data/quarantine/``
(id, reason), and the stage summary counts them per reason. Records whose split cannot use them
are quarantined later, by the split plan.

Why ingest rather than read the tars in place: the later stages read the records several times
(splits, train, embed, measure, report) and some by id (training sets, galleries, utility). Parquet
serves that with column projection and id filters; a tar shard has no columns and must be read end
to end to find one sample. Ingesting costs one pass and a copy; every later stage stays unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import pyarrow as pa
import ray

from study import storage
from study.config import DataConfig
from study.core import quality
from study.data import coco, laion, records, synth_write, synthetic, voc
from study.data.records import STATUS
from study.errors import DataError
from study.data import quarantine
from study.frame.context import RunContext
from study.data.record_sink import RecordSink

# -- synthetic --------------------------------------------------------------------------------
def generate(ctx: RunContext) -> dict:
    cfg = ctx.cfg.data
    root = ctx.data_root
    storage.remove(root)  # a half-written earlier attempt must not leave stray shards
    def log(done: int, shards: int, n: int) -> None:
        ctx.log("data", f"wrote {done}/{shards} shards ({n}/{cfg.num_images} records)",
                progress=(n, cfg.num_images, "records"))

    out = synth_write.write_synthetic(cfg, "records", root, progress=synth_write.throttled(log))
    # Class names and a prompt in the captions' words: zero-shot utility of the VLM study uses them.
    names = [synthetic.class_name(c) for c in range(cfg.num_classes)]
    return {"source": "synthetic", "path": root, "records": cfg.num_images, "shards": out["shards"],
            "label_names": names, "prompt": synthetic.PROMPT}


# -- record shards in place -------------------------------------------------------------------
def _check_batch(batch: pa.Table) -> pa.Table:
    """Record shards -> the same records with a read status: does each image decode?"""
    status = [quality.OK if laion.inspect_image(b) else quality.UNDECODABLE for b in batch.column("image").to_pylist()]
    return batch.append_column(STATUS, pa.array(status, pa.string()))


def _read_records(root: str) -> "ray.data.Dataset":
    fs, paths = storage.arrow_fs_paths(records.shard_uris(root))
    return ray.data.read_parquet(paths, filesystem=fs, override_num_blocks=len(paths)).map_batches(
        _check_batch, batch_format="pyarrow")


def check_in_place(ctx: RunContext) -> dict:
    """Record shards are used where they are when every record is usable; otherwise the usable ones
    are copied under the run (a user's files are never rewritten) and the rest quarantined."""
    cfg = ctx.cfg.data
    src = storage.absolute(cfg.path)
    storage.remove(ctx.stage_dir("data"))  # no copy or quarantine left from an earlier attempt
    total = records.dataset(src).count_rows()  # from the footers; a DataError for a bad path or schema
    ctx.log("data", f"checking {total} records under {src}")
    sink = RecordSink(ctx.stage_dir("data", "records"), ctx.quarantine_dir, cfg.shard_size, write_records=False)
    _read_records(src).write_datasink(sink)
    repeated = quarantine.repeated_hashes(sink.id_hashes)
    if not _quarantined(sink.counts) and not len(repeated):
        ctx.log("data", f"using {total} records from {src} in place (every image decodes, ids are unique)")
        return {"source": "parquet", "path": src, "records": total, "records_read": total, "quarantined": {}}
    storage.remove(ctx.stage_dir("data"))
    ctx.log("data", f"{src} holds records that cannot be used; copying the usable ones under the run")
    return _finish(ctx, _read_records(src), {"source": "parquet", "input": cfg.path})


def _quarantined(counts: dict) -> dict[str, int]:
    return {r: counts[r] for r in quality.REASONS if counts.get(r)}


def _finish(ctx: RunContext, ds: "ray.data.Dataset", summary: dict) -> dict:
    """Write ``ds`` (records with a read status) through the sink, quarantine repeated ids, and
    summarise; a DataError when nothing usable is left."""
    root = ctx.stage_dir("data", "records")
    sink = RecordSink(root, ctx.quarantine_dir, ctx.cfg.data.shard_size)
    ds.write_datasink(sink)
    counts = sink.counts
    if counts.get(quality.OK):
        dropped = quarantine.drop_repeated(root, ctx.quarantine_dir, quarantine.repeated_hashes(sink.id_hashes))
        if dropped:
            counts[quality.OK] -= dropped
            counts[quality.DUPLICATE_ID] = counts.get(quality.DUPLICATE_ID, 0) + dropped
    held = _quarantined(counts)
    where = ctx.cfg.data.path or root
    if not counts.get(quality.OK):
        raise DataError(f"no usable record under {where}: {counts.get('read', 0)} read, "
                        f"quarantined {held or 'none'}")
    summary = {**summary, "path": root, "records": counts[quality.OK], "records_read": counts["read"],
               "records_written": counts[quality.OK], "quarantined": held,
               "shards": len(records.shard_uris(root))}
    if "matched" in counts or ctx.cfg.data.objects:
        summary["with_objects"] = counts.get("matched", 0)
        summary["without_objects"] = counts[quality.OK] - counts.get("matched", 0)
    note = (f"; quarantined {sum(held.values())} ({', '.join(f'{n} {r}' for r, n in held.items())}), ids under "
            f"{ctx.quarantine_dir}") if held else ""
    ctx.log("data", f"wrote {counts[quality.OK]} of {counts['read']} records into {root}{note}")
    return summary


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


def read_img2dataset(cfg: DataConfig, log: Callable[[str], None], layout: Img2datasetLayout) -> tuple:
    inputs = Inputs.of(cfg, layout.suffix)
    size = sum(s for _, s in inputs.shards)
    log(f"reading {len(inputs.shards)} {layout.suffix} files ({size / 2**20:.1f} MiB) from {cfg.path}")
    ds = layout.read(inputs.shards)
    if inputs.objects:
        partitions = laion.join_partitions(size, int(ray.cluster_resources().get("CPU", 1)))
        ds = ds.join(laion.read_objects(inputs.objects), "left_outer", num_partitions=partitions, on=("id",))
    return ds, {"source": cfg.source, "input": cfg.path, "objects": cfg.objects}


def ingest(ctx: RunContext, read: Callable) -> dict:
    """Read the input as records with a read status (``read(cfg, log) -> (Dataset, summary)``) and
    write it under the run through the sink. A file the reader cannot parse at all (a corrupt tar
    or Parquet file) stops the stage with one line naming the input, not a Ray traceback."""
    storage.remove(ctx.stage_dir("data"))  # a half-written earlier attempt must not leave stray shards
    ds, summary = read(ctx.cfg.data, lambda message: ctx.log("data", message))
    try:
        return _finish(ctx, ds, summary)
    except DataError:
        raise
    except Exception as exc:
        cause = _unreadable_cause(exc)
        if cause is None:
            raise
        raise DataError(f"cannot read the input under {ctx.cfg.data.path}: {type(cause).__name__}: "
                        f"{str(cause).splitlines()[0] if str(cause) else 'no detail'}") from None


def _unreadable_cause(exc: BaseException) -> BaseException | None:
    """The file-format error (tar, Arrow, I/O) behind an exception Ray re-raised, if any."""
    import tarfile

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (tarfile.TarError, pa.ArrowInvalid, EOFError, OSError)):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


# -- COCO-style annotations -------------------------------------------------------------------------
def _coco_annotations(cfg: DataConfig) -> list[str]:
    return [storage.absolute(u) for u in (cfg.coco.instances, cfg.coco.captions) if u]


def coco_fingerprint(cfg: DataConfig) -> dict:
    """The annotation files and every image file under ``data.path`` (name and size)."""
    files = [(u, int(storage.fs_and_path(u)[0].size(storage.fs_and_path(u)[1]))) for u in _coco_annotations(cfg)]
    images = laion.input_files(storage.absolute(cfg.path), "")
    return {"annotations": files, "images": laion.fingerprint(images, storage.absolute(cfg.path))}


def coco_columns(cfg: DataConfig) -> set[str]:
    cols = {"id", "image", "width", "height"}
    cols |= {"label", "boxes", "objects"} if cfg.coco.instances else set()
    return cols | ({"caption"} if cfg.coco.captions else set())


def read_coco(cfg: DataConfig, log: Callable[[str], None]) -> tuple:
    """The annotations are parsed once on the driver (a COCO file is one JSON document) into a
    table of per-record rows; Ray Data tasks read the images."""
    rows = coco.load_coco(cfg.coco.instances, cfg.coco.captions, cfg.coco.label_rule, cfg.coco.caption_mode)
    log(f"reading {rows.num_rows} COCO records, images from {cfg.path}")
    summary = {"source": "coco", "input": cfg.path, "annotations": _coco_annotations(cfg),
               "label_names": coco.category_names(rows)}
    return coco.read_coco(cfg.path, rows), summary


def read_voc(cfg: DataConfig, log: Callable[[str], None]) -> tuple:
    """Class folders are listed on the driver, their files by tasks (``study.data.voc``)."""
    annotations = storage.absolute(cfg.voc.annotations) if cfg.voc.annotations else None
    names = voc.label_names(storage.absolute(cfg.path))
    log(f"reading {len(names)} class folders under {cfg.path}" + (f", boxes from {annotations}" if annotations else ""))
    summary = {"source": "voc", "input": cfg.path, "annotations": annotations, "label_names": names}
    return voc.read_voc(storage.absolute(cfg.path), annotations), summary


def voc_fingerprint(cfg: DataConfig):
    return voc.fingerprint(storage.absolute(cfg.path), storage.absolute(cfg.voc.annotations) if cfg.voc.annotations else None)


def voc_columns(cfg: DataConfig) -> set[str]:
    return {"id", "image", "width", "height", "label"} | ({"boxes", "objects"} if cfg.voc.annotations else set())


def read_hf(cfg: DataConfig, log: Callable[[str], None]) -> tuple:
    """A Hugging Face dataset on disk or as Parquet/imagefolder files (``study.data.hf_read``)."""
    from study.data import hf_read

    ds, info = hf_read.read_hf(cfg.path, cfg.hf)
    rows = info["rows"] if info.get("rows") is not None else "the"
    log(f"reading {rows} rows of split '{info['split']}' ({info['layout']}) from {cfg.path}")
    return ds, {"source": "hf", "input": cfg.path, **info}


def _hf(name: str) -> Callable:
    def call(cfg: DataConfig):
        from study.data import hf_read

        return getattr(hf_read, name)(cfg.path, cfg.hf)

    return call


def read_parquet(cfg: DataConfig, log: Callable[[str], None]) -> tuple:
    return _read_records(storage.absolute(cfg.path)), {"source": "parquet", "input": cfg.path}


# -- the registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    read: Callable | None  # (DataConfig, log) -> (Dataset of records with a read status, summary); None: generated
    inputs: Callable[[DataConfig], object]  # what reruns are keyed on besides the config (JSON-able)
    columns: Callable[[DataConfig], set[str] | None]  # record columns it fills (None: all), checked up front
    run: Callable[[RunContext], dict] | None = None  # the data stage (default: ingest what ``read`` gives)

    def stage(self, ctx: RunContext) -> dict:
        return self.run(ctx) if self.run else ingest(ctx, self.read)

    @classmethod
    def img2dataset(cls, layout: Img2datasetLayout) -> "Source":
        return cls(partial(read_img2dataset, layout=layout), layout.fingerprint, layout.columns)


SOURCES: dict[str, Source] = {
    "synthetic": Source(None, lambda cfg: None, lambda cfg: None, run=generate),
    "parquet": Source(read_parquet, lambda cfg: records.fingerprint(storage.absolute(cfg.path)),
                      lambda cfg: set(records.dataset(storage.absolute(cfg.path)).schema.names), run=check_in_place),
    # A tar's members are only known by reading it: img2dataset always writes key.txt.
    "webdataset": Source.img2dataset(Img2datasetLayout(".tar", laion.read_webdataset, lambda uri: True)),
    "img2dataset": Source.img2dataset(Img2datasetLayout(
        ".parquet", laion.read_img2dataset, lambda uri: "caption" in laion.img2dataset_columns(uri)[1])),
    "coco": Source(read_coco, coco_fingerprint, coco_columns),
    "voc": Source(read_voc, voc_fingerprint, voc_columns),
    "hf": Source(read_hf, _hf("fingerprint"), _hf("columns_filled")),
}


def run_data(ctx: RunContext) -> dict:
    return SOURCES[ctx.cfg.data.source].stage(ctx)


def input_fingerprint(cfg: DataConfig):
    return SOURCES[cfg.source].inputs(cfg)

