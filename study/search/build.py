"""Open the sharded index of one public embedding set: resolve the index parameters and the shard
plan, train IVF-PQ once, start (or restart into) the shard actors.

Persisted under ``index_root/<key>/`` (``key`` hashes the public set's fingerprint, the resolved
parameters, the shard count and the FAISS version, so a changed set or config never loads a stale
index): ``trained.faiss`` (IVF-PQ: coarse quantizer and PQ codebooks, trained on a seeded sample)
and ``shard-NNNNN.faiss`` per shard. A rerun or a restarted actor loads these instead of building.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np
import ray

from study import storage
from study.config import SearchConfig
from study.config_load import config_hash
from study.core import ivf_params
from study.core.shard_plan import GIB, ShardPlan, bytes_per_vector, fixed_bytes, plan_shards, shard_bounds
from study.core.topk import l2_normalize
from study.errors import StudyError
from study.search import indexes, layout
from study.search.indexes import IndexParams
from study.search.shards import ShardedIndex, ShardSpec

CODE_BUDGET_SHARE = 0.5  # IVF-PQ codes may take at most half of the cluster's memory


@dataclass(frozen=True)
class IndexPlan:
    params: IndexParams
    shards: ShardPlan
    train_size: int
    memory_per_node: float
    nodes: int

    def as_dict(self) -> dict:
        return {**self.params.as_dict(), "train_size": self.train_size, **self.shards.as_dict(),
                "memory_per_node_gib": round(self.memory_per_node / GIB, 2), "nodes_available": self.nodes}


def cluster_memory(cfg: SearchConfig) -> tuple[float, int]:
    """(memory one node gives the shards, in bytes; nodes). Ray's ``memory`` resource already
    leaves out the object store; the smallest node counts, as SPREAD may use any."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if cfg.memory_per_node_gb:
        return cfg.memory_per_node_gb * GIB, max(1, len(nodes))
    return min(n["Resources"].get("memory", 0) for n in nodes), len(nodes)


def plan_index(cfg: SearchConfig, public: layout.EmbeddingSet, memory_per_node: float, nodes: int) -> IndexPlan:
    """Index parameters (config, else the FAISS guidelines) and the shard plan for ``public``."""
    nb, d, ivf = public.n, public.d, cfg.ivf
    if cfg.index == "flat":
        params, train_size = IndexParams("flat", d), 0
    else:
        nlist = ivf.nlist or ivf_params.choose_nlist(nb)
        m = ivf.code_size or ivf_params.choose_code_size(d, nb, CODE_BUDGET_SHARE * memory_per_node * nodes)
        if d % m:
            raise StudyError(f"search.ivf.code_size: {m} does not divide the embedding dimension {d}")
        if nlist > nb:
            raise StudyError(f"search.ivf.nlist: {nlist} lists for {nb} public vectors; use at most {nb}")
        params, train_size = IndexParams("ivfpq", d, nlist, m), ivf.train_size or ivf_params.training_size(nb, nlist)
    per_vector = bytes_per_vector(params.kind, d, params.m, public.name_bytes)
    try:
        shards = plan_shards(nb, per_vector, fixed_bytes(params.kind, d, params.nlist, params.m),
                             cfg.shard_headroom_gb * GIB, memory_per_node, nodes, cfg.shards)
    except ValueError as exc:
        raise StudyError(f"search: {exc}") from None
    if shards.nodes == 0 or shards.nodes > nodes:
        raise StudyError(
            f"search: {shards.shards} shards of {shards.shard_bytes / GIB:.2f} GiB need {shards.nodes or 'larger'} "
            f"nodes of {memory_per_node / GIB:.1f} GiB; the cluster has {nodes} (set search.shards, or use "
            f"search.index: ivfpq)")
    return IndexPlan(params, shards, train_size, memory_per_node, nodes)


def index_key(plan: IndexPlan, public: layout.EmbeddingSet, cfg: SearchConfig) -> str:
    return config_hash(public.fingerprint, plan.params.as_dict(), plan.shards.shards, plan.train_size,
                       cfg.ivf.seed, cfg.metric, faiss.__version__)


def threads_for(cpus: float) -> int:
    return max(1, int(cpus))


@ray.remote(max_retries=2)
def train_task(public: layout.EmbeddingSet, params: IndexParams, train_size: int, seed: int, normalize: bool,
               out_uri: str, use_gpu: bool) -> float:
    """Train IVF-PQ on a seeded sample of ``public`` and persist the empty index; seconds taken.
    Nothing else runs in the stage meanwhile, so k-means uses every core of this node."""
    start = time.perf_counter()
    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    rows = np.sort(np.random.default_rng(seed).choice(public.n, size=train_size, replace=False))
    xt = layout.read_rows(public, rows)
    index = indexes.new_ivfpq(params)
    if use_gpu and indexes.gpu_available():  # the FAISS wiki's recipe: k-means on GPU, the rest on CPU
        index.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(params.d))
    index.train(l2_normalize(xt) if normalize else xt)
    indexes.write_index(index, out_uri)
    return time.perf_counter() - start


def open_index(cfg: SearchConfig, public: layout.EmbeddingSet, index_root: str,
               log: Callable[[str], None], server_cls: type | None = None) -> tuple[ShardedIndex, dict]:
    """The sharded index over ``public`` (built, or loaded from ``index_root``) and its summary."""
    if public.n == 0:
        raise StudyError(f"search: the public set {public.uri} holds no embeddings")
    memory_per_node, nodes = cluster_memory(cfg)
    plan = plan_index(cfg, public, memory_per_node, nodes)
    key_dir = storage.join(index_root, index_key(plan, public, cfg))
    normalize = cfg.metric == "l2_normalized"
    use_gpu = cfg.gpus_per_shard > 0
    summary = {"index": plan.as_dict(), "index_dir": key_dir, "train_seconds": 0.0}
    trained = storage.join(key_dir, "trained.faiss") if plan.params.kind == "ivfpq" else ""
    if trained and not storage.exists(trained):
        log(f"training IVF{plan.params.nlist},PQ{plan.params.m} on {plan.train_size} of {public.n} vectors")
        task = train_task.options(num_cpus=cfg.cpus_per_shard, num_gpus=cfg.gpus_per_shard)
        summary["train_seconds"] = round(ray.get(task.remote(public, plan.params, plan.train_size, cfg.ivf.seed,
                                                             normalize, trained, use_gpu)), 2)
    specs = [
        ShardSpec(shard=i, offset=a, n=b - a, pieces=public.pieces(a, b), params=plan.params, normalize=normalize,
                  index_uri=storage.join(key_dir, f"shard-{i:05d}.faiss"), trained_uri=trained,
                  threads=threads_for(cfg.cpus_per_shard), use_gpu=use_gpu)
        for i, (a, b) in enumerate(shard_bounds(public.n, plan.shards.shards))
    ]
    extra = {"server_cls": server_cls} if server_cls else {}
    index = ShardedIndex(specs, cfg.cpus_per_shard, cfg.gpus_per_shard, plan.shards.shard_bytes, cfg.max_restarts, **extra)
    loaded = sum(i["loaded"] for i in index.infos)
    summary.update({"shards_loaded": loaded, "shards_built": len(specs) - loaded,
                    "shard_seconds": max(i["seconds"] for i in index.infos),
                    "devices": sorted({i["device"] for i in index.infos})})
    log(f"{public.n} public vectors, d={public.d}, {plan.params.kind} in {len(specs)} shards "
        f"({loaded} loaded, {len(specs) - loaded} built)")
    return index, summary
