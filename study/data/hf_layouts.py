"""What the driver knows of a Hugging Face dataset's split (``describe`` -> ``Split``), from
metadata only (schemas, footers, the split folder's listing; no image bytes, no per-image listing).

Three layouts (``LAYOUT_NAMES``), detected (``detect``) or named, each holding splits (``HfConfig.split``):

- ``disk``: what ``Dataset.save_to_disk`` writes (``state.json``, ``data-*.arrow``), or
  ``DatasetDict.save_to_disk`` (``dataset_dict.json``, one folder per split). Local disk only:
  ``datasets`` copies a remote one whole into a temporary folder on every open.
- ``parquet``: Parquet files as ``to_parquet`` or the Hub write them (``data/train-00000-of-00001.parquet``,
  ``<config>/<split>/0000.parquet``); files are assigned to splits by the Hub's own naming rules.
- ``imagefolder``: optional split folders (``train/``, ``test/``, ...), class folders (the label,
  in sorted order), and optionally a ``metadata.{jsonl,csv,parquet}`` at the split's root whose
  ``file_name`` column names the image relative to it. As in ``datasets``, a metadata file lists
  the records (images it does not name are not read); its own ``label`` column, if any, wins.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.config import HfConfig
from study.data.hf import IMAGE_SUFFIXES, KEY, LAYOUT_NAMES, METADATA_FILES, offline_datasets
from study.errors import DataError


@dataclass(frozen=True)
class Split:
    layout: str
    root: str  # the split's folder (disk, imagefolder) or the input (parquet)
    schema: pa.Schema  # the columns ``hf_batch`` sees, KEY included
    rows: int | None = None
    files: tuple[str, ...] = ()  # parquet: the split's files
    class_names: Mapping[str, list] = field(default_factory=dict)  # column -> its ClassLabel names
    classes: tuple[str, ...] = ()  # imagefolder: class folders in label order
    metadata: str | None = None  # imagefolder: the metadata file
    loose: bool = False  # imagefolder: images directly in the split folder


def _entries(uri: str, kind: str) -> list[str]:
    """Sorted names of one folder's files or folders (``kind``), hidden and underscore names left out."""
    fs, path = storage.fs_and_path(uri)
    names = (posixpath.basename(e["name"].rstrip("/")) for e in fs.ls(path, detail=True) if e["type"] == kind)
    return sorted(n for n in names if not n.startswith((".", "_")))


def _with_key(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(KEY, pa.string()))


def _class_names(features) -> dict[str, list]:
    return {k: list(f.names) for k, f in features.items() if isinstance(f, offline_datasets().ClassLabel)}


def detect(path: str) -> str:
    """The layout under ``path``: save_to_disk's files, else the first Parquet, image or metadata
    file met going down the first folder of each level (the Hub nests Parquet files two deep)."""
    fs, p = storage.fs_and_path(path)
    if fs.isfile(p):
        if p.endswith(".parquet"):
            return "parquet"
        raise DataError(f"{path} is a file, not a dataset folder or a .parquet file")
    here = path
    for depth in range(3):
        files = _entries(here, "file")
        if depth == 0 and {"state.json", "dataset_dict.json"} & set(files):
            return "disk"
        if any(f in METADATA_FILES or f.lower().endswith(IMAGE_SUFFIXES) for f in files):
            return "imagefolder"
        if any(f.endswith(".parquet") for f in files):
            return "parquet"
        folders = _entries(here, "directory")
        if not folders:
            break
        here = storage.join(here, folders[0])
    raise DataError(f"cannot tell the layout of {path}: no save_to_disk folder, Parquet or image files; "
                    f"set data.hf.format to one of {list(LAYOUT_NAMES)}")


def load_disk(root: str):
    try:
        return offline_datasets().load_from_disk(root, keep_in_memory=False)
    except FileNotFoundError as e:
        raise DataError(f"not a save_to_disk folder: {root} ({e})") from None


def describe_disk(path: str, split: str) -> Split:
    if not storage.is_local(path):
        raise DataError(f"data.hf.format 'disk' reads local folders only ({path}): datasets copies a remote one "
                        "whole on every open; write it with Dataset.to_parquet and read that instead")
    root = path
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        splits = storage.read_json(os.path.join(path, "dataset_dict.json"))["splits"]
        if split not in splits:
            raise DataError(f"{path} holds splits {splits}, not '{split}': set data.hf.split")
        root = os.path.join(path, split)
    ds = load_disk(root)
    return Split("disk", root, _with_key(ds.data.schema), rows=len(ds), class_names=_class_names(ds.features))


def describe_parquet(path: str, split: str) -> Split:
    fs, p = storage.fs_and_path(path)
    files = [path] if fs.isfile(p) else _parquet_splits(path).get(split)
    if not files:
        raise DataError(f"no Parquet files of split '{split}' under {path}; its splits: "
                        f"{sorted(_parquet_splits(path))}")
    with storage.open_read(files[0]) as fh:
        schema = pq.read_schema(fh)
    names = _class_names(offline_datasets().Features.from_arrow_schema(schema))
    return Split("parquet", path, _with_key(schema), files=tuple(files), class_names=names)


def _parquet_splits(path: str) -> dict[str, list[str]]:
    """Split -> its Parquet files, by the Hub's naming rules (``datasets.data_files``)."""
    offline_datasets()
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        found = DataFilesDict.from_patterns(get_data_patterns(path), base_path=path)
    except FileNotFoundError:  # no data files at all
        return {}
    by_split = {str(s): sorted(f for f in fs if f.endswith(".parquet")) for s, fs in found.items()}
    return {s: fs for s, fs in by_split.items() if fs}


def describe_imagefolder(path: str, split: str) -> Split:
    offline_datasets()
    from datasets.data_files import SPLIT_KEYWORDS  # train/training, validation/valid/dev/val, ...

    words = {str(s): ws for s, ws in SPLIT_KEYWORDS.items()}
    splits = [d for d in _entries(path, "directory") if any(d.lower() in ws for ws in words.values())]
    root = path
    if splits:
        match = [d for d in splits if d == split or d.lower() in words.get(split, ())]
        if not match:
            raise DataError(f"no split folder for '{split}' under {path}; its split folders: {splits}")
        root = storage.join(path, match[0])
    elif split != "train":
        raise DataError(f"{path} has no split folders, so it holds split 'train' only, not '{split}'")
    files, classes = _entries(root, "file"), tuple(_entries(root, "directory"))
    metadata = next((storage.join(root, f) for f in METADATA_FILES if f in files), None)
    fields = [pa.field("image", pa.string())]
    if metadata:
        meta = _metadata_schema(metadata)
        if "file_name" not in meta.names:
            raise DataError(f"{metadata} has no 'file_name' column; its columns: {meta.names}")
        fields = [pa.field("image", pa.string()) if f.name == "file_name" else f for f in meta]
    derived = bool(classes) and "label" not in [f.name for f in fields]
    fields += [pa.field("label", pa.int32())] if derived else []
    return Split("imagefolder", root, _with_key(pa.schema(fields)), classes=classes, metadata=metadata,
                 loose=any(f.lower().endswith(IMAGE_SUFFIXES) for f in files),
                 class_names={"label": list(classes)} if derived else {})


def _metadata_schema(uri: str) -> pa.Schema:
    """Columns of a metadata file, from its Parquet footer or its first MiB of text."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    with storage.open_read(uri) as fh:
        if uri.endswith(".parquet"):
            return pq.read_schema(fh)
        head = fh.read(1 << 20)
    head = head[: head.rfind(b"\n") + 1] or head
    read = pcsv.read_csv if uri.endswith(".csv") else pjson.read_json
    try:
        return read(pa.BufferReader(head)).schema
    except pa.ArrowInvalid as e:
        raise DataError(f"cannot read {uri}: {e}") from None


DESCRIBERS = {  # keys: LAYOUT_NAMES; (path, split) -> Split
    "disk": describe_disk, "parquet": describe_parquet, "imagefolder": describe_imagefolder}


def describe(path: str, cfg: HfConfig) -> Split:
    path = storage.absolute(path)
    if not storage.exists(path):
        raise DataError(f"input path does not exist: {path}")
    return DESCRIBERS[detect(path) if cfg.format == "auto" else cfg.format](path, cfg.split)
