"""Stage ``search``: k-NN of every attacked set's queries among the public set, per search space.

A kind's search space names which embedding of the public set is the database and which
embedding of the attacked records are the queries (SSL: crop and whole image in the same
representation; VLM: caption by the text tower, public images by the image tower). Output:
``search/<model>/<set>/<space>/part-00000.parquet`` (query_id, neighbor_ids, distances).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.core.topk import l2_normalize
from study.pipeline.context import RunContext
from study.pipeline.kinds import get_kind
from study.search.shards import ShardedIndex

PUBLIC = "public"


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
    kind = get_kind(ctx.cfg.study)
    attacked = kind.attacked_sets(ctx.cfg)
    summary = {}
    for model in kind.models:
        for space in kind.spaces_for(ctx.cfg):
            db_view, query_view = kind.spaces[space]
            pub_ids, xb = read_embeddings(ctx.embeddings(model, PUBLIC, db_view))
            if cfg.metric == "l2_normalized":
                xb = l2_normalize(xb)
            index = ShardedIndex(xb, cfg.shards, cfg.cpus_per_shard)
            try:
                for s in attacked:
                    q_ids, xq = read_embeddings(ctx.embeddings(model, s, query_view))
                    if cfg.metric == "l2_normalized":
                        xq = l2_normalize(xq)
                    D = np.empty((len(xq), min(cfg.k, len(xb))), np.float32)
                    I = np.empty(D.shape, np.int64)
                    for start, d_b, i_b in index.search_batches(xq, cfg.k, cfg.query_batch_size):
                        D[start : start + len(d_b)], I[start : start + len(i_b)] = d_b[:, : D.shape[1]], i_b[:, : D.shape[1]]
                    _write_results(ctx.search_results(model, s, space), q_ids, pub_ids, D, I)
                    summary[f"{model}/{s}/{space}"] = {"queries": len(q_ids), "k": int(D.shape[1])}
                ctx.log("search", f"{model}/{space}: {len(xb)} public vectors in {len(index.actors)} shards, "
                        f"queried {', '.join(attacked)}")
            finally:
                index.close()
    return summary


def read_results(uri: str) -> tuple[list[str], list[list[str]]]:
    """(query ids, neighbour ids per query, nearest first) of one persisted search."""
    with storage.open_read(uri) as fh:
        table = pq.read_table(fh, columns=["query_id", "neighbor_ids"])
    return table.column("query_id").to_pylist(), table.column("neighbor_ids").to_pylist()


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
