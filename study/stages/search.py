"""Stage ``search``: k-NN of every attacked set's queries among the public set, per search space.

A kind's search space names which embedding of the public set is the database and which
embedding of the attacked records are the queries (SSL: crop and whole image in the same
representation; VLM: caption by the text tower, public images by the image tower). A kind may add
searches of its own (``StudyKind.extra_searches``: the VLM text retriever's captions -> public
captions).

Per model and space: the shard actors read their own slices of the public embeddings from
storage and build (or load) their indexes (``study.search.build``); for an approximate index the
recall against exact search is measured on a sample of queries (``study.search.recall``); then
each attacked set's queries stream from storage in batches, every batch goes to all shards, and
its merged results are written at once (``study.search.results``). The driver holds one or two
query batches and their results, never the public set or a whole query set.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.config import SearchConfig
from study.config_load import config_hash
from study.core.topk import l2_normalize
from study.frame.context import RunContext
from study.frame.kinds import get_kind
from study.search import layout
from study.search.build import open_index
from study.search.recall import measure_recall, sample_queries
from study.search.results import ResultWriter
from study.search.shards import ShardedIndex

PUBLIC = "public"
IN_FLIGHT = 2  # query batches at the shards at once: one searched while the last is written


def read_embeddings(uri: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,), embeddings (n, d) float32) of a whole embedding set, in memory: for tests and
    small sets; the search stage itself streams (``study.search.layout``)."""
    files = storage.list_files(uri)
    fs, paths = storage.arrow_fs_paths(files)
    table = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths])
    d = table.schema.field("embedding").type.list_size
    return np.asarray(table.column("id").to_pylist(), dtype=object), layout.vectors(table.column("embedding"), d)


def search_set(index: ShardedIndex, queries: layout.EmbeddingSet, writer: ResultWriter, cfg: SearchConfig,
               nprobe: int) -> int:
    """Stream one query set through the shards into ``writer``; returns the queries searched."""
    k = min(cfg.k, index.nb)
    pending: deque = deque()
    searched = 0

    def drain_one() -> None:
        ids, refs = pending.popleft()
        D, _, names = index.gather(refs, k)
        writer.write(ids, names, D)

    for _, ids, xq in layout.iter_batches(queries, cfg.query_batch_size, writer.start_row):
        pending.append((ids, index.submit(l2_normalize(xq) if cfg.metric == "l2_normalized" else xq, k, nprobe)))
        searched += len(ids)
        if len(pending) >= IN_FLIGHT:
            drain_one()
    while pending:
        drain_one()
    writer.close()
    return searched


def rows_per_part(cfg: SearchConfig) -> int:
    """``search.rows_per_file`` rounded up to whole query batches, so a resumed run batches alike."""
    return -(-cfg.rows_per_file // cfg.query_batch_size) * cfg.query_batch_size


def run_search(ctx: RunContext) -> dict:
    cfg = ctx.cfg.search
    kind = get_kind(ctx.cfg.study)
    attacked = kind.attacked_sets(ctx.cfg, ctx.uses)
    summary: dict = {"indexes": {}}
    for (model, space), (db_view, query_view) in kind.searches(ctx.cfg, ctx.spaces()).items():
        log = lambda msg, where=f"{model}/{space}": ctx.log("search", f"{where}: {msg}")  # noqa: E731
        public = layout.describe(ctx.embeddings(model, PUBLIC, db_view))
        queries = {s: layout.describe(ctx.embeddings(model, s, query_view)) for s in attacked}
        index, info = open_index(cfg, public, ctx.search_index(model, space), log)
        try:
            nprobe = 0
            if info["index"]["kind"] != "flat":
                samples = sample_queries(queries, cfg.recall_queries, cfg.ivf.seed, cfg.metric == "l2_normalized")
                nprobe, info["recall"] = measure_recall(index, samples, cfg.k, info["index"]["nlist"],
                                                        cfg.ivf.nprobe, cfg.ivf.target_recall, log)
            for s, qs in queries.items():
                key = config_hash(info["index_dir"], qs.fingerprint, cfg.k, cfg.metric, cfg.query_batch_size,
                                  rows_per_part(cfg), nprobe)
                writer = ResultWriter(ctx.search_results(model, s, space), key, rows_per_part(cfg))
                if writer.start_row:
                    log(f"{s}: resuming after {min(writer.start_row, qs.n)} of {qs.n} queries")
                search_set(index, qs, writer, cfg, nprobe)
                entry = {"queries": qs.n, "k": min(cfg.k, index.nb)}
                if "recall" in info:
                    entry["recall"] = info["recall"]["per_set"].get(s, {})
                summary[f"{model}/{s}/{space}"] = entry
            log(f"queried {', '.join(f'{s} ({q.n})' for s, q in queries.items())}")
        finally:
            index.close()
        summary["indexes"][f"{model}/{space}"] = info
    return summary
