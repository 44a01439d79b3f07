"""Stages ``data`` and ``splits``: make or check the records, then plan and verify the splits."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.core.splits import UNASSIGNED, assign_splits, find_duplicate_ids, find_overlaps, split_digest
from study.data import records, synthetic
from study.data.loading import read_split, split_uri
from study.errors import DataError, StudyError
from study.pipeline.context import RunContext


def run_data(ctx: RunContext) -> dict:
    cfg = ctx.cfg.data
    if cfg.source == "parquet":
        meta = records.read_metadata(ctx.data_root)  # raises a DataError for a bad path or schema
        bad = records.undecodable_images(ctx.data_root)
        if bad:  # every later stage decodes images: stop here, naming them, not in a worker's traceback
            raise DataError(f"{len(bad)} of {meta.num_rows} records under {ctx.data_root} have images that cannot be "
                            f"decoded (first: {', '.join(map(str, bad[:5]))}); fix or remove them")
        ctx.log("data", f"using {meta.num_rows} records from {ctx.data_root} (every image decodes)")
        return {"source": "parquet", "path": ctx.data_root, "records": meta.num_rows}
    root = ctx.data_root
    storage.remove(root)  # a half-written earlier attempt must not leave stray shards
    shards = 0
    for shard, rows in synthetic.iter_shards(cfg):
        records.write_shard(storage.join(root, f"part-{shard:05d}.parquet"), rows)
        shards += 1
        ctx.log("data", f"wrote shard {shard + 1} ({min((shard + 1) * cfg.shard_size, cfg.num_images)}/{cfg.num_images} records)")
    # Class names and a prompt in the captions' words: zero-shot utility of the VLM study uses them.
    names = [synthetic.class_name(c) for c in range(cfg.num_classes)]
    return {"source": "synthetic", "path": root, "records": cfg.num_images, "shards": shards,
            "label_names": names, "prompt": synthetic.PROMPT}
