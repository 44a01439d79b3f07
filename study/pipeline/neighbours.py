"""Stages ``embed`` and ``search``: embeddings of public images and crops, then their k-NN.

embed  -> ``embed/<model>/<set>/<representation>/part-*.parquet`` (id, embedding) and
          ``embed/crops.json`` (per set: embedded count, skipped counts by reason).
search -> ``search/<model>/<set>/<representation>/part-00000.parquet`` (query_id,
          neighbor_ids, distances), the public set's labels being in ``splits/public.parquet``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.core.splits import assign_splits
from study.core.topk import l2_normalize
from study.data import records
from study.embed.pipeline import embed_all
from study.embed.views import CROP, WHOLE, plan_crops
from study.pipeline.context import RunContext
from study.pipeline.learn import MODELS, model_uri
from study.search.shards import ShardedIndex

PUBLIC = "public"
ATTACKED = ("target", "reference", "holdout")


def run_embed(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    meta = records.read_metadata(ctx.data_root)
    split_of = assign_splits(meta.column("id").to_pylist(), cfg.splits.fractions, cfg.splits.seed)
    attacked = tuple(s for s in ATTACKED if cfg.splits.fractions.get(s, 0) > 0)
    _, crops = plan_crops(meta, split_of, attacked, cfg.embed.crop)
    for s, c in crops.items():
        skipped = ", ".join(f"{n} {r}" for r, n in c["skipped"].items()) or "none"
        ctx.log("embed", f"{s}: {c['embedded']} crops ({cfg.embed.crop.rule} rule), skipped: {skipped}")
    public_n = int((split_of == PUBLIC).sum())
    modes = {PUBLIC: WHOLE, **{s: CROP for s in attacked}}
    out = ctx.stage_dir("embed")
    for model in MODELS:
        storage.remove(storage.join(out, model))  # no stray files from an interrupted attempt
    written = embed_all(
        ctx.data_root,
        {m: model_uri(ctx, m) for m in MODELS},
        modes,
        cfg.splits,
        cfg.embed,
        cfg.data.image_size,
        out,
        use_gpu=cfg.ray.use_gpu,
        log=lambda msg: ctx.log("embed", msg),
    )
    expected = {PUBLIC: public_n, **{s: crops[s]["embedded"] for s in attacked}}
    for (model, s, rep), n in written.items():
        if n != expected[s]:  # the plan and the pipeline apply one rule; a mismatch is a bug
            raise RuntimeError(f"embedded {n} rows for {model}/{s}/{rep}, planned {expected[s]}")
    summary = {"sets": {PUBLIC: {"embedded": public_n, "skipped": {}}, **crops}, "crop": vars(cfg.embed.crop)}
    storage.write_json(storage.join(out, "crops.json"), summary)
    return summary


def read_embeddings(uri: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,), embeddings (n, d) float32) from a directory of embedding shards."""
    files = storage.list_files(uri)
    fs, paths = storage.arrow_fs_paths(files)
    table = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths])
    emb = table.column("embedding").combine_chunks()
    d = emb.type.list_size
    return np.asarray(table.column("id").to_pylist(), dtype=object), emb.values.to_numpy().reshape(-1, d)


def run_search(ctx: RunContext) -> dict:
    cfg = ctx.cfg.search
    embed_dir = ctx.stage_dir("embed")
    attacked = [s for s in ATTACKED if ctx.cfg.splits.fractions.get(s, 0) > 0]
    summary = {}
    for model in MODELS:
        for rep in cfg.representations:
            pub_ids, xb = read_embeddings(storage.join(embed_dir, model, PUBLIC, rep))
            if cfg.metric == "l2_normalized":
                xb = l2_normalize(xb)
            index = ShardedIndex(xb, cfg.shards, cfg.cpus_per_shard)
            try:
                for s in attacked:
                    q_ids, xq = read_embeddings(storage.join(embed_dir, model, s, rep))
                    if cfg.metric == "l2_normalized":
                        xq = l2_normalize(xq)
                    D = np.empty((len(xq), min(cfg.k, len(xb))), np.float32)
                    I = np.empty(D.shape, np.int64)
                    for start, d_b, i_b in index.search_batches(xq, cfg.k, cfg.query_batch_size):
                        D[start : start + len(d_b)], I[start : start + len(i_b)] = d_b[:, : D.shape[1]], i_b[:, : D.shape[1]]
                    _write_results(ctx.stage_dir("search", model, s, rep, "part-00000.parquet"), q_ids, pub_ids, D, I)
                    summary[f"{model}/{s}/{rep}"] = {"queries": len(q_ids), "k": int(D.shape[1])}
                ctx.log("search", f"{model}/{rep}: {len(xb)} public vectors in {len(index.actors)} shards, "
                        f"queried {', '.join(attacked)}")
            finally:
                index.close()
    return summary


def _write_results(uri: str, q_ids: np.ndarray, pub_ids: np.ndarray, D: np.ndarray, I: np.ndarray) -> None:
    neighbour_ids = np.where(I >= 0, pub_ids[np.clip(I, 0, None)], None)
    table = pa.table(
        {
            "query_id": pa.array(q_ids.astype(str), pa.string()),
            "neighbor_ids": pa.array([list(row) for row in neighbour_ids], pa.list_(pa.string())),
            "distances": pa.array([list(row) for row in D], pa.list_(pa.float32())),
        }
    )
    with storage.open_atomic(uri, "wb") as fh:
        pq.write_table(table, fh)
