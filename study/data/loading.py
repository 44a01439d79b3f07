"""Split members and decoded images: into memory for small sets (training, galleries), or one
batch at a time for a training set streamed through Ray Data (``decode_training_batch``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.data import records
from study.data.model_input import ModelInput, channels_first


MEMBERS = "members"  # splits/members/split=<name>/*.parquet, written by the splits stage


def members_dir(splits_dir: str) -> str:
    return storage.join(splits_dir, MEMBERS)


def split_uri(splits_dir: str, split: str) -> str:
    """The directory of one split's member files (absent when the split has no records)."""
    return storage.join(members_dir(splits_dir), f"split={split}")


def iter_split(splits_dir: str, split: str, batch_rows: int = 65_536):
    """Arrow record batches (id, label) of one split's member files, in file order."""
    uri = split_uri(splits_dir, split)
    files = [u for u in storage.list_files(uri) if u.endswith(".parquet")] if storage.exists(uri) else []
    if files:
        fs, paths = storage.arrow_fs_paths(files)
        for path in paths:
            yield from pq.ParquetFile(fs.open_input_file(path)).iter_batches(batch_size=batch_rows, columns=["id", "label"])


def read_split(splits_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of a split from its member files, sorted by id; label -1 where missing.
    In memory: for the sets that are used whole on one machine (training, galleries)."""
    uri = split_uri(splits_dir, split)
    files = [u for u in storage.list_files(uri) if u.endswith(".parquet")] if storage.exists(uri) else []
    if not files:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
    fs, paths = storage.arrow_fs_paths(files)
    table = pa.concat_tables([pq.read_table(p, filesystem=fs, columns=["id", "label"]) for p in paths])
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    labels = np.asarray(table.column("label").fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    order = np.argsort(ids.astype(str), kind="stable")
    return ids[order], labels[order]


def load_images(data_root: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Decoded (H, W, 3) uint8 images by id, as stored (for the report's pictures of records)."""
    table = records.read_records(data_root, ids, columns=["id", "image"])
    return {i: records.decode_image(b) for i, b in zip(table.column("id").to_pylist(), table.column("image").to_pylist())}


def load_inputs(data_root: str, ids: Sequence[str], inputs: ModelInput) -> dict[str, np.ndarray]:
    """Model inputs (S, S, 3) uint8 of whole images by id (``data.model_input``'s rule)."""
    table = records.read_records(data_root, ids, columns=["id", "image"])
    return {i: inputs.of_bytes(b) for i, b in zip(table.column("id").to_pylist(), table.column("image").to_pylist())}


def load_training_set(data_root: str, splits_dir: str, splits: Sequence[str],
                      inputs: ModelInput) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (n, 3, S, S) uint8 and labels (n,) of the union of splits, in id order."""
    parts = [read_split(splits_dir, s) for s in splits]
    ids = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    order = np.argsort(ids.astype(str), kind="stable")
    ids, labels = ids[order], labels[order]
    images = load_inputs(data_root, list(ids), inputs)
    return channels_first(inputs.stack([images[i] for i in ids])), labels


def training_pair_ids(data_root: str, splits_dir: str, splits: Sequence[str]) -> tuple[np.ndarray, int]:
    """Ids (sorted) of the union of splits that can train a CLIP-style model, and how many were
    left out for an empty caption (a pair without text teaches nothing)."""
    ids = np.sort(np.concatenate([read_split(splits_dir, s)[0] for s in splits]).astype(str)).astype(object)
    table = records.read_records(data_root, list(ids), columns=["id", "caption"])
    captioned = {i for i, c in zip(table.column("id").to_pylist(), table.column("caption").to_pylist()) if records.has_text(c)}
    keep = np.array([i in captioned for i in ids], dtype=bool)
    return ids[keep], int((~keep).sum())


def load_training_pairs(data_root: str, splits_dir: str, splits: Sequence[str],
                        inputs: ModelInput) -> tuple[np.ndarray, list[str]]:
    """Model inputs (n, 3, S, S) uint8 and captions (n,) of the union of splits, in id order; records
    with an empty caption are left out (``training_pair_ids`` counts them)."""
    ids = np.sort(np.concatenate([read_split(splits_dir, s)[0] for s in splits]).astype(str)).astype(object)
    table = records.read_records(data_root, list(ids), columns=["id", "image", "caption"])
    by_id = {i: (b, c) for i, b, c in zip(*(table.column(n).to_pylist() for n in ("id", "image", "caption")))}
    ids = [i for i in ids if records.has_text(by_id[i][1])]  # the rule training_pair_ids counts by
    return channels_first(inputs.stack([inputs.of_bytes(by_id[i][0]) for i in ids])), [by_id[i][1] for i in ids]


def decode_training_batch(batch: pa.Table, plan, splits: Sequence[str], inputs: ModelInput,
                          text: bool) -> dict[str, np.ndarray]:
    """Records -> the training rows among them as model inputs: {"id", "image" (n, 3, S, S) uint8, and
    "label" (n,) int64 (-1 where missing) or, with ``text``, "caption" (n,)}. Rows are kept when the
    split plan (``core.split_plan.SplitPlan``) puts them in one of ``splits`` (and, with ``text``,
    their caption says something: the rule ``training_pair_ids`` counts by)."""
    ids = batch.column("id").to_pylist()
    keep = np.isin(plan.assign(batch), list(splits))
    captions = batch.column("caption").to_pylist() if text else None
    if text:
        keep &= np.fromiter((records.has_text(c) for c in captions), bool, len(ids))
    rows = np.flatnonzero(keep)
    images = batch.column("image")
    pixels = [inputs.of_bytes(images[int(i)].as_py()) for i in rows]
    out = {"id": np.asarray([ids[i] for i in rows], dtype=object), "image": channels_first(inputs.stack(pixels))}
    if text:
        out["caption"] = np.asarray([captions[i] for i in rows], dtype=object)
    else:
        labels = batch.column("label") if "label" in batch.column_names else pa.nulls(len(ids), pa.int64())
        out["label"] = np.asarray(labels.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)[rows]
    return out
