"""Sharded exact k-NN: FAISS shard actors and the fan-out/merge around them (DESIGN §4).

Each ``ShardActor`` holds one contiguous slice of the database vectors in a flat (exact,
squared-L2) FAISS index. ``ShardedIndex.search`` sends a query batch to every shard, and the
per-shard top-k lists merge into the exact global top-k with ``study.core.topk.merge_topk``.
"""
from __future__ import annotations

from typing import Iterator

import faiss
import numpy as np
import ray

from study.core.topk import merge_topk


def build_flat_index(xb: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype=np.float32))
    return index


@ray.remote
class ShardActor:
    """One shard of the database: local row i is global id ``offset + i``."""

    def __init__(self, xb: np.ndarray, offset: int, threads: int = 1):
        faiss.omp_set_num_threads(threads)
        self.index = build_flat_index(xb)
        self.offset = offset

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        D, I = self.index.search(np.ascontiguousarray(xq, dtype=np.float32), min(k, self.index.ntotal))
        return D, np.where(I >= 0, I + self.offset, -1)

    def size(self) -> int:
        return self.index.ntotal


def shard_bounds(nb: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices of nearly equal size; never an empty shard."""
    shards = max(1, min(shards, nb))
    edges = np.linspace(0, nb, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class ShardedIndex:
    """Exact k-NN over ``xb`` split across ``shards`` actors."""

    def __init__(self, xb: np.ndarray, shards: int, cpus_per_shard: float = 0.5, threads: int = 1):
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        self.nb, self.d = xb.shape
        actor_cls = ShardActor.options(num_cpus=cpus_per_shard)
        self.actors = [actor_cls.remote(ray.put(xb[a:b]), a, threads) for a, b in shard_bounds(self.nb, shards)]
        # Fail here, with the actor's own error, if a shard could not be built.
        sizes = ray.get([a.size.remote() for a in self.actors])
        assert sum(sizes) == self.nb, (sizes, self.nb)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq_ref = ray.put(np.ascontiguousarray(xq, dtype=np.float32))
        parts = ray.get([a.search.remote(xq_ref, k) for a in self.actors])
        return merge_topk(parts, k)

    def search_batches(self, xq: np.ndarray, k: int, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start row, D, I) per query batch, each batch's shards searched in parallel."""
        for start in range(0, len(xq), batch_size):
            D, I = self.search(xq[start : start + batch_size], k)
            yield start, D, I

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
