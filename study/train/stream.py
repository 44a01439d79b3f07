"""Ray Data edge of training: a training set too large to hold on each worker streams.

``use_stream`` decides from the decoded size of the set (``train.stream``, ``train.in_memory_gb``);
small sets stay in memory on every worker (fast, reproducible to the bit), large ones become a Ray
Data pipeline — read the record shards, keep the rows the keyed-hash plan puts in the model's
splits, decode and resize in tasks — that Ray Train splits into equal shards, one per worker
(``ray.train.get_dataset_shard``). Augmentation runs per batch on the worker's device, as for the
in-memory path. ``count_rows`` counts a set (and its rows without a caption) with tasks and a sum,
so the driver never lists the set's ids.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import pyarrow as pa
import ray

from study import storage
from study.config import TrainConfig
from study.core.split_plan import SplitPlan
from study.data import records
from study.data.loading import decode_training_batch
from study.data.model_input import ModelInput

TASK_CPUS = 0.25  # decode tasks must fit beside the training workers on a small machine


def use_stream(cfg: TrainConfig, records_n: int, image_size: int) -> bool:
    """Stream when asked to, or (``auto``) when the decoded set would exceed ``in_memory_gb``."""
    if cfg.stream != "auto":
        return cfg.stream == "always"
    return records_n * 3 * image_size * image_size > cfg.in_memory_gb * 2**30


def _read(data_root: str, columns: list[str]) -> "ray.data.Dataset":
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    return ray.data.read_parquet(paths, filesystem=fs).select_columns(columns)


def training_dataset(data_root: str, plan: SplitPlan, splits: Sequence[str], inputs: ModelInput,
                     text: bool) -> "ray.data.Dataset":
    """The decoded training rows of ``splits`` (see ``decode_training_batch``), as a stream."""
    wanted = ["caption"] if text else [c for c in ("label",) if c in records.dataset(data_root).schema.names]
    columns = list(dict.fromkeys(["id", "image", *plan.columns(), *wanted]))
    decode = partial(decode_training_batch, plan=plan, splits=list(splits), inputs=inputs, text=text)
    return _read(data_root, columns).map_batches(decode, batch_format="pyarrow", num_cpus=TASK_CPUS)


def _count_batch(batch: pa.Table, plan: SplitPlan, splits: list[str], text: bool) -> dict:
    inside = np.isin(plan.assign(batch), splits)
    usable = inside.copy()
    if text:
        usable &= np.fromiter((records.has_text(c) for c in batch.column("caption").to_pylist()), bool, len(inside))
    return {"inside": np.array([inside.sum()], np.int64), "usable": np.array([usable.sum()], np.int64)}


def count_rows(data_root: str, plan: SplitPlan, splits: Sequence[str], text: bool) -> tuple[int, int]:
    """(records in ``splits``, those a model can train on) over every record, counted by tasks."""
    columns = list(dict.fromkeys(["id", *plan.columns()] + (["caption"] if text else [])))
    counted = _read(data_root, columns).map_batches(
        partial(_count_batch, plan=plan, splits=list(splits), text=text),
        batch_format="pyarrow", num_cpus=TASK_CPUS)
    totals = counted.sum(["inside", "usable"]) or {}
    return int(totals.get("sum(inside)", 0) or 0), int(totals.get("sum(usable)", 0) or 0)


def shard_batches(shard, seed: int, rank: int):
    """``(epoch, batch size) -> numpy batches`` of this worker's shard, shuffled locally per epoch; the ragged
    last batch is dropped (Ray Train's equal split gives every worker the same number of rows, so
    every worker runs the same number of steps)."""

    def batches(epoch: int, batch_size_per_worker: int):
        return shard.iter_batches(batch_size=batch_size_per_worker, batch_format="numpy", drop_last=True,
                                  local_shuffle_buffer_size=4 * batch_size_per_worker,
                                  local_shuffle_seed=seed * 1_000_003 + epoch * 101 + rank)

    return batches
