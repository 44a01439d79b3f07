"""Reading a Hugging Face dataset's split into records with Ray Data (``read_hf``), and what is
known of a read beforehand (``columns_filled``, ``fingerprint``).

The driver plans parts from the split's metadata (``hf_layouts.describe``); Ray Data tasks read
row ranges (disk), row groups (parquet) or class folders (imagefolder) and map them with the pure
``hf.hf_batch``. Ray is imported inside the readers, so importing this module does not load it.
"""
from __future__ import annotations

import hashlib
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.config import HfConfig
from study.data.hf import FIELDS, IMAGE_SUFFIXES, KEY, ROWS_PER_BATCH, ROWS_PER_PART, hf_batch, resolve
from study.data.hf_layouts import Split, describe, load_disk
from study.data.record_batch import READ_THREADS
from study.errors import DataError


def _keyed(table: pa.Table, start: int) -> pa.Table:
    return table.append_column(KEY, pa.array([str(i) for i in range(start, start + table.num_rows)], pa.string()))


# -- readers (Ray Data): the driver plans parts, tasks read them ------------------------------------
def disk_batch(parts: pa.Table, root: str, mapping: Mapping[str, str], box_format: str) -> Iterator[pa.Table]:
    """Row ranges [start, stop) of a save_to_disk folder -> records, a batch at a time. Opening the
    folder memory-maps its files (tens of ms for hundreds of them), so a part spans a few batches."""
    ds = load_disk(root).with_format("arrow")
    for start, stop in zip(parts.column("start").to_pylist(), parts.column("stop").to_pylist()):
        for a in range(start, stop, ROWS_PER_BATCH):
            yield hf_batch(_keyed(ds[a:min(a + ROWS_PER_BATCH, stop)], a), mapping, box_format)


def parquet_batch(parts: pa.Table, columns: list[str] | None, mapping: Mapping[str, str],
                  box_format: str) -> Iterator[pa.Table]:
    """Row groups (file, row_group, start: the index of its first row) -> records, a batch at a time."""
    for uri, group, start in zip(*(parts.column(c).to_pylist() for c in ("file", "row_group", "start"))):
        with storage.open_read(uri) as fh:
            for b in pq.ParquetFile(fh).iter_batches(batch_size=ROWS_PER_BATCH, row_groups=[group], columns=columns):
                yield hf_batch(_keyed(pa.Table.from_batches([b]), start), mapping, box_format)
                start += b.num_rows


def folder_files(row: dict, root: str) -> list[dict]:
    """One class folder (``folder`` "" for the split folder's own images, not its subfolders) -> a row
    per image file: its path under ``root`` (the key), its URI and the folder's label."""
    fs, base = storage.fs_and_path(root)
    base = base.rstrip("/")
    here = posixpath.join(base, row["folder"]) if row["folder"] else base
    found = fs.find(here) if row["folder"] else [e["name"] for e in fs.ls(here, detail=True) if e["type"] == "file"]
    images = [p for p in sorted(found)
              if p.lower().endswith(IMAGE_SUFFIXES) and not posixpath.basename(p).startswith((".", "_"))]
    uri = (lambda p: p) if storage.is_local(root) else fs.unstrip_protocol
    return [{KEY: p[len(base) + 1:], "image": uri(p), "label": row["label"]} for p in images]


def _inside(name) -> str | None:
    """A metadata ``file_name`` as a path under the split folder; None when it would leave it."""
    if not isinstance(name, str) or not name or "://" in name:
        return None
    rel = posixpath.normpath(name.replace("\\", "/"))
    return None if rel.startswith(("/", "../")) or rel == ".." else rel


def metadata_batch(batch: pa.Table, root: str, classes: tuple[str, ...], mapping: Mapping[str, str],
                   box_format: str) -> pa.Table:
    """Metadata rows -> records: ``file_name`` becomes the image's URI and the key, and its class
    folder the label unless the metadata has one. A name that leaves the split folder (absolute,
    ``..``, a URI) reads as a missing image, so a downloaded dataset cannot read other files."""
    names = batch.column("file_name").to_pylist()
    rel = [_inside(n) for n in names]
    t = batch.drop_columns(["file_name"]).append_column(
        "image", pa.array([storage.join(root, r) if r else None for r in rel], pa.string()))
    t = t.append_column(KEY, pa.array([str(n) for n in names], pa.string()))
    if classes and "label" not in t.column_names:
        index = {c: i for i, c in enumerate(classes)}
        t = t.append_column("label", pa.array([index.get(r.split("/")[0]) if r else None for r in rel], pa.int32()))
    for name in mapping.values():  # a JSON block whose rows all lack a key has no such column
        if name and name not in t.column_names and "." not in name:
            t = t.append_column(name, pa.nulls(t.num_rows))
    return hf_batch(t, mapping, box_format)


def parquet_parts(files: tuple[str, ...]) -> tuple[list[dict], int]:
    """(a part per row group of ``files`` with the index of its first row, rows), from the footers."""
    parts, rows = [], 0
    for uri in files:
        with storage.open_read(uri) as fh:
            meta = pq.read_metadata(fh)
        for g in range(meta.num_row_groups):
            parts.append({"file": uri, "row_group": g, "start": rows})
            rows += meta.row_group(g).num_rows
    return parts, rows


def read_disk(split: Split, mapping: Mapping[str, str], box_format: str):
    import ray

    step = ROWS_PER_PART
    parts = [{"start": a, "stop": min(a + step, split.rows)} for a in range(0, split.rows, step)]
    return ray.data.from_items(parts).map_batches(
        partial(disk_batch, root=split.root, mapping=mapping, box_format=box_format),
        batch_format="pyarrow", batch_size=1), split.rows


def read_parquet(split: Split, mapping: Mapping[str, str], box_format: str):
    """One part per row group, numbered from the footers, so a row's index (its default id) is the
    same as in the disk layout of the same dataset."""
    import ray

    parts, rows = parquet_parts(split.files)
    columns = sorted({n if n in split.schema.names else n.split(".")[0] for n in mapping.values() if n} - {KEY})
    return ray.data.from_items(parts).map_batches(
        partial(parquet_batch, columns=columns, mapping=mapping, box_format=box_format),
        batch_format="pyarrow", batch_size=1), rows


METADATA_READERS = {".jsonl": "read_json", ".csv": "read_csv", ".parquet": "read_parquet"}


def read_imagefolder(split: Split, mapping: Mapping[str, str], box_format: str):
    """With a metadata file, its rows (read by Ray Data) are the records; else the class folders are
    listed here and their files by tasks."""
    import ray

    if split.metadata:
        fs, paths = storage.arrow_fs_paths([split.metadata])
        reader = getattr(ray.data, METADATA_READERS[posixpath.splitext(split.metadata)[1]])
        ds = reader(paths, filesystem=fs).map_batches(
            partial(metadata_batch, root=split.root, classes=split.classes, mapping=mapping, box_format=box_format),
            batch_format="pyarrow", batch_size=ROWS_PER_BATCH)
        return ds, None
    folders = [{"folder": c, "label": i} for i, c in enumerate(split.classes)]
    folders += [{"folder": "", "label": None}] if split.loose else []
    if not folders:
        raise DataError(f"no images under {split.root}")
    return ray.data.from_items(folders).flat_map(partial(folder_files, root=split.root)).map_batches(
        partial(hf_batch, mapping=mapping, box_format=box_format), batch_format="pyarrow",
        batch_size=ROWS_PER_BATCH), None


def _listing(root: str, folders: list[str]) -> list[list]:
    """Per folder ("" the root's own files): [name, files, digest of their paths and sizes]."""
    def one(folder: str) -> list:
        fs, base = storage.fs_and_path(storage.join(root, folder) if folder else root)
        found = (fs.find(base, detail=True) if folder else
                 {e["name"]: e for e in fs.ls(base, detail=True) if e["type"] == "file"})
        files = sorted((posixpath.relpath(p, base), int(e["size"])) for p, e in found.items())
        return [folder, len(files), hashlib.sha256(repr(files).encode()).hexdigest()[:16]]

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(one, folders))


def _sizes(root: str, files: tuple[str, ...]) -> list[list]:
    """[path under ``root``, size] per file."""
    fs, base = storage.fs_and_path(root)
    return [[posixpath.relpath(p, base) if p != base else posixpath.basename(p), int(fs.size(p))]
            for p in (storage.fs_and_path(u)[1] for u in files)]


@dataclass(frozen=True)
class Layout:
    read: Callable  # (Split, mapping, box_format) -> (Dataset of records with a read status, rows or None)
    files: Callable[[Split], list]  # the files it reads, as names and sizes


LAYOUTS = {  # LAYOUT_NAMES; what the driver knows of each: hf_layouts.DESCRIBERS
    "disk": Layout(read_disk, lambda s: _listing(s.root, [""])),
    "parquet": Layout(read_parquet, lambda s: _sizes(s.root, s.files)),
    "imagefolder": Layout(read_imagefolder, lambda s: _listing(s.root, ["", *s.classes])),
}


# -- entry points -------------------------------------------------------------------------------------
def read_hf(path: str, cfg: HfConfig):
    """-> (Dataset of records with their read status, info {layout, split, rows (None when unknown
    before reading), columns, label_names (the mapped label's ClassLabel names or class folders),
    mapping (record field -> column, KEY for the row's key)})."""
    split = describe(path, cfg)
    mapping = resolve(split.schema, cfg.columns)
    # Every field named ("" for none), so no batch guesses a column the driver did not see.
    explicit = {f: mapping.get(f, "") for f in FIELDS}
    ds, rows = LAYOUTS[split.layout].read(split, explicit, cfg.box_format)
    return ds, {"layout": split.layout, "split": cfg.split, "rows": rows,
                "columns": [n for n in split.schema.names if n != KEY],
                "label_names": list(split.class_names.get(mapping.get("label"), [])), "mapping": mapping}


def columns_filled(path: str, cfg: HfConfig) -> set[str]:
    """The record fields a read fills, from the dataset's metadata only."""
    mapping = resolve(describe(path, cfg).schema, cfg.columns)
    return {"id", "image", "width", "height"} | (set(mapping) & {"label", "caption", "objects", "boxes"})


def fingerprint(path: str, cfg: HfConfig) -> dict:
    """The split's files (names and sizes; per class folder a digest): changes when one is added,
    removed or rewritten with another size, so stages built on them rerun."""
    split = describe(path, cfg)
    return {"layout": split.layout, "split": cfg.split, "files": LAYOUTS[split.layout].files(split)}
