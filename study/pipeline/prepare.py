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


def run_splits(ctx: RunContext) -> dict:
    cfg = ctx.cfg.splits
    meta = records.read_metadata(ctx.data_root)
    ids = meta.column("id").to_pylist()
    dupes = find_duplicate_ids(ids)
    if dupes:
        raise DataError(f"record ids must be unique; duplicated: {dupes}")
    split_of = assign_splits(ids, cfg.fractions, cfg.seed)
    labels = meta.column("label") if "label" in meta.column_names else pa.nulls(len(ids), pa.int32())
    labels_np = np.asarray(labels.fill_null(-1).to_numpy(zero_copy_only=False))
    out = ctx.splits_dir
    members, counts = {}, {}
    for name, frac in cfg.fractions.items():
        mask = split_of == name
        members[name] = [i for i, m in zip(ids, mask) if m]
        counts[name] = int(mask.sum())
        if frac > 0 and counts[name] == 0:
            raise StudyError(f"split '{name}' is empty: {len(ids)} records are too few for fraction {frac}")
        table = pa.table({"id": pa.array(members[name], pa.string()), "label": pa.array(labels_np[mask], pa.int32())})
        with storage.open_atomic(split_uri(out, name), "wb") as fh:
            pq.write_table(table, fh)
    manifest = {
        "seed": cfg.seed,
        "fractions": dict(cfg.fractions),
        "counts": counts,
        "unassigned": int((split_of == UNASSIGNED).sum()),
        "num_classes": int(labels_np.max()) + 1 if (labels_np >= 0).any() else 0,
        "files": {name: f"{name}.parquet" for name in cfg.fractions},
        "digest": split_digest(members, cfg.seed),
    }
    storage.write_json(storage.join(out, "manifest.json"), manifest)
    verify_splits(out)
    ctx.log("splits", "  ".join(f"{k}={v}" for k, v in counts.items()) + f"  (unassigned={manifest['unassigned']})")
    return manifest


def verify_splits(splits_dir: str) -> dict:
    """Re-read the member files: stop with a clear message unless they are disjoint and match
    the manifest's digest. Runs before any model trains."""
    manifest = storage.read_json(storage.join(splits_dir, "manifest.json"))
    members = {name: list(read_split(splits_dir, name)[0]) for name in manifest["files"]}
    overlaps = find_overlaps(members)
    if overlaps:
        (a, b), example = next(iter(overlaps.items()))
        raise StudyError(f"splits are not disjoint: '{a}' and '{b}' share ids such as {example}")
    if split_digest(members, manifest["seed"]) != manifest["digest"]:
        raise StudyError(f"split member files under {splits_dir} do not match their manifest digest")
    return manifest
