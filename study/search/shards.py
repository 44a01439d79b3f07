"""Sharded k-NN: shard servers that read their own slice of the public set, the Ray actors around
them, and the fan-out/merge (docs/scaling/search.md).

A ``ShardServer`` owns global rows [offset, offset + n) of an embedding set. On start it loads
its persisted index (``spec.index_uri``) or builds it from storage and persists it, then reads
the ids of its rows, so it can answer a query with record ids as well as distances; the driver
never holds the public vectors or ids. ``ShardedIndex`` runs one Ray actor per shard (spread
over nodes, restarted by Ray on failure, retrying the calls in flight: a restarted shard loads
its persisted index and answers exactly as before), sends each query batch to every shard and
merges the per-shard top-k lists into the global top-k with ``study.core.topk.merge_topk``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import ray

from study import storage
from study.core.topk import l2_normalize, merge_topk
from study.search import indexes, layout
from study.search.indexes import IndexParams


@dataclass(frozen=True)
class ShardSpec:
    """Everything a shard needs to (re)start: small, so Ray keeps it for restarts."""

    shard: int
    offset: int  # global row of the shard's first vector
    n: int
    pieces: tuple[tuple[str, int, int], ...]  # (file, first row, end row) of its slice
    params: IndexParams
    normalize: bool
    index_uri: str  # where the built shard persists
    trained_uri: str = ""  # ivfpq: the trained, empty index every shard adds its vectors to
    threads: int = 1
    use_gpu: bool = False


class ShardServer:
    """One shard; plain Python, made a Ray actor by ``ShardedIndex``."""

    def __init__(self, spec: ShardSpec):
        start = time.perf_counter()
        faiss.omp_set_num_threads(spec.threads)
        self.spec = spec
        self.loaded = storage.exists(spec.index_uri)
        index = indexes.read_index(spec.index_uri) if self.loaded else self._build()
        if index.ntotal != spec.n:
            raise RuntimeError(f"shard {spec.shard}: index holds {index.ntotal} vectors, slice has {spec.n}")
        if not self.loaded:
            indexes.write_index(index, spec.index_uri)
        self.names = layout.read_ids(spec.pieces)
        self.device, self._gpu = "cpu", None
        if spec.use_gpu and indexes.gpu_available():
            index, self._gpu = indexes.to_gpu(index, spec.params)
            self.device = "gpu"
        self.index = index
        self.seconds = time.perf_counter() - start

    def _chunks(self):
        for batch in layout.iter_pieces(self.spec.pieces, ("embedding",)):
            x = layout.vectors(batch.column("embedding"), self.spec.params.d)
            yield l2_normalize(x) if self.spec.normalize else x

    def _build(self) -> faiss.Index:
        p = self.spec.params
        if p.kind == "flat":
            return indexes.filled_flat(p.d, self.spec.n, self._chunks())
        return indexes.add_chunks(indexes.read_index(self.spec.trained_uri), self._chunks())

    def info(self) -> dict:
        return {"shard": self.spec.shard, "vectors": self.spec.n, "loaded": self.loaded,
                "seconds": round(self.seconds, 3), "device": self.device, "pid": os.getpid()}

    def search(self, xq: np.ndarray, k: int, nprobe: int = 0) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """(D (nq, k'), global ids I (nq, k'), record ids of I flattened row-major), k' = min(k, n)."""
        if self.device == "gpu" and k > indexes.GPU_MAX_K:
            raise ValueError(f"GPU FAISS answers at most k = {indexes.GPU_MAX_K}, asked for {k}")
        D, I = indexes.search(self.index, xq, k, nprobe)
        flat = I.ravel()
        names = self.names.take(pa.array(np.where(flat >= 0, flat, 0))).to_numpy(zero_copy_only=False)
        names = pa.array(np.where(flat >= 0, names, None), pa.large_string())
        return D, np.where(I >= 0, I + self.spec.offset, -1), names

    def exact(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (D, global I) over the shard's slice, streamed from storage (recall's ground truth)."""
        D, I = indexes.exact_search(xq, self._chunks(), k)
        return D, np.where(I >= 0, I + self.spec.offset, -1)


def take_names(I_out: np.ndarray, I_all: np.ndarray, names_all: np.ndarray) -> np.ndarray:
    """Record ids of the merged ids: ``names_all[r, j]`` belongs to ``I_all[r, j]``; each id
    of ``I_out[r]`` is found in ``I_all[r]`` (ids are unique per row, -1 gives None). (nq, k)."""
    nq, width = I_all.shape
    if I_out.size == 0:
        return np.empty(I_out.shape, dtype=object)
    order = np.argsort(I_all, axis=1, kind="stable")
    # One sorted key per (row, id): rows own disjoint ranges, so one searchsorted serves all.
    span = int(max(I_all.max(), I_out.max())) + 2
    row_base = np.arange(nq, dtype=np.int64)[:, None] * span
    keys = (np.take_along_axis(I_all, order, axis=1) + 1 + row_base).ravel()
    hit = np.searchsorted(keys, (I_out + 1 + row_base).ravel()).reshape(I_out.shape)
    pos = np.take_along_axis(order, hit - np.arange(nq)[:, None] * width, axis=1)
    names = np.take_along_axis(names_all, pos, axis=1)
    return np.where(I_out >= 0, names, None)


class ShardedIndex:
    """k-NN over shards built (or loaded) by Ray actors from their ``ShardSpec``s."""

    def __init__(self, specs: list[ShardSpec], cpus_per_shard: float = 0.5, gpus_per_shard: float = 0.0,
                 memory_per_shard: float = 0.0, max_restarts: int = 3, server_cls: type = ShardServer):
        options = {"num_cpus": cpus_per_shard, "scheduling_strategy": "SPREAD",
                   "max_restarts": max_restarts, "max_task_retries": max_restarts}
        if gpus_per_shard:
            options["num_gpus"] = gpus_per_shard
        if memory_per_shard:
            options["memory"] = int(memory_per_shard)  # Ray places a shard only where it fits
        actor_cls = ray.remote(server_cls).options(**options)
        self.actors = [actor_cls.remote(spec) for spec in specs]
        # Fail here, with the actor's own error, if a shard could not be built or loaded.
        self.infos = ray.get([a.info.remote() for a in self.actors])
        self.nb = sum(i["vectors"] for i in self.infos)

    def submit(self, xq: np.ndarray, k: int, nprobe: int = 0) -> list:
        xq_ref = ray.put(np.ascontiguousarray(xq, dtype=np.float32))
        return [a.search.remote(xq_ref, k, nprobe) for a in self.actors]

    @staticmethod
    def gather(refs: list, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(D, I, record ids) of the global top-k, (nq, k) each, from ``submit``'s references."""
        parts = ray.get(refs)
        D, I = merge_topk([(d, i) for d, i, _ in parts], k)
        I_all = np.concatenate([i for _, i, _ in parts], axis=1)
        names_all = np.concatenate(
            [np.asarray(n.to_numpy(zero_copy_only=False), dtype=object).reshape(i.shape) for _, i, n in parts], axis=1)
        return D, I, take_names(I, I_all, names_all)

    def search(self, xq: np.ndarray, k: int, nprobe: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.gather(self.submit(xq, k, nprobe), k)

    def exact(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq_ref = ray.put(np.ascontiguousarray(xq, dtype=np.float32))
        return merge_topk(ray.get([a.exact.remote(xq_ref, k) for a in self.actors]), k)

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
