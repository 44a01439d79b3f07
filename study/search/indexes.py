"""FAISS index objects: make, train, fill, persist, load, move to a GPU, search, exact search.

All indexes are squared L2 (vectors are L2-normalised first for ``l2_normalized``). Local ids
are 0..n-1 in the order vectors were added; the shard adds its global offset. Indexes persist in
FAISS's own format (the bytes of ``faiss.serialize_index``), streamed to and from storage so a
shard never holds a second copy while writing or reading.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import faiss
import numpy as np

from study import storage
from study.core.ivf_params import NBITS, PQ_MAX_TRAIN_PER_CODE
from study.core.topk import merge_topk

GPU_MAX_K = 2048  # GPU FAISS's k-selection limit (and nprobe's)
# FAISS computes exact L2 distances (flat indexes, IVF coarse quantisers, ``faiss.knn``) with one
# BLAS matrix product per tile when nq * d >= ``faiss.cvar.distance_compute_blas_threshold``, and
# otherwise scans the database once per query, reading it from memory nq times. Its default
# (128,000: 1,000 queries at d = 128) sends every batch of 250 queries, and the short last batch of
# every query set, down the per-query scan, several times slower per query. Any batch of at least
# this many queries takes the BLAS path here; a smaller one costs at most this many scans.
BLAS_MIN_QUERIES = 20
GPU_FLOAT16_LUT_ABOVE_M = 48  # larger GPU IVF-PQ codes need float16 lookup tables (shared memory)


@dataclass(frozen=True)
class IndexParams:
    """What a shard's index is: ``flat`` (exact) or ``ivfpq`` with nlist lists and m-byte codes."""

    kind: str = "flat"
    d: int = 0
    nlist: int = 0
    m: int = 0
    nbits: int = NBITS

    def as_dict(self) -> dict:
        return dict(vars(self)) if self.kind == "ivfpq" else {"kind": self.kind, "d": self.d}


def new_ivfpq(p: IndexParams) -> faiss.IndexIVFPQ:
    # The Python wrapper keeps the quantizer alive as long as the index (referenced_objects).
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(p.d), p.d, p.nlist, p.m, p.nbits)
    index.pq.cp.max_points_per_centroid = PQ_MAX_TRAIN_PER_CODE
    return index


def train_ivfpq(p: IndexParams, xt: np.ndarray) -> faiss.Index:
    """Coarse centroids and PQ codebooks from the sample ``xt`` (n, d); the index stays empty."""
    index = new_ivfpq(p)
    index.train(np.ascontiguousarray(xt, dtype=np.float32))
    return index


def filled_flat(d: int, n: int, chunks: Iterable[np.ndarray]) -> faiss.IndexFlatL2:
    """A flat index of ``n`` vectors written straight into FAISS's own buffer, chunk by chunk:
    ``add`` would grow a vector by doubling and hold up to three copies at once."""
    index = faiss.IndexFlatL2(d)
    index.codes.resize(n * d * 4)
    buf = faiss.rev_swig_ptr(index.codes.data(), n * d * 4).view(np.float32).reshape(n, d) if n else None
    filled = 0
    for x in chunks:
        buf[filled : filled + len(x)] = x
        filled += len(x)
    if filled != n:
        raise RuntimeError(f"flat shard expected {n} vectors, read {filled}")
    index.ntotal = n
    return index


def add_chunks(index: faiss.Index, chunks: Iterable[np.ndarray]) -> faiss.Index:
    for x in chunks:
        index.add(np.ascontiguousarray(x, dtype=np.float32))
    return index


def write_index(index: faiss.Index, uri: str) -> None:
    """Persist atomically (readers see the whole file or none)."""
    with storage.open_atomic(uri, "wb") as fh:
        writer = faiss.PyCallbackIOWriter(fh.write)
        faiss.write_index(index, writer)
        del writer  # flushes its buffer into fh


def read_index(uri: str) -> faiss.Index:
    with storage.open_read(uri) as fh:
        return faiss.read_index(faiss.PyCallbackIOReader(fh.read))


def gpu_available() -> bool:
    """FAISS was built with GPU support and this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index, p: IndexParams) -> tuple[faiss.Index, object]:
    """(GPU copy of ``index`` on the first visible device, its resources; keep both alive)."""
    res = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = p.kind == "ivfpq" and p.m > GPU_FLOAT16_LUT_ABOVE_M
    return faiss.index_cpu_to_gpu(res, 0, index, options), res


def blas_threshold(d: int) -> int:
    """The ``distance_compute_blas_threshold`` that puts every batch of ``BLAS_MIN_QUERIES`` or
    more queries of dimension ``d`` on FAISS's BLAS path (its rule: BLAS when nq * d >= it)."""
    return BLAS_MIN_QUERIES * d


def use_blas(d: int) -> None:
    """Set this process's FAISS BLAS threshold for queries of dimension ``d`` (a process-wide
    setting of FAISS's; the search functions here set it before every search)."""
    faiss.cvar.distance_compute_blas_threshold = blas_threshold(d)


def search(index: faiss.Index, xq: np.ndarray, k: int, nprobe: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) of the index's top-min(k, ntotal); ``nprobe`` is passed per call, never stored, so a
    restarted shard answers the same."""
    k = min(k, index.ntotal)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if k == 0:
        return np.empty((len(xq), 0), np.float32), np.empty((len(xq), 0), np.int64)
    use_blas(xq.shape[1])
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe > 0 else None
    return index.search(xq, k, params=params)


def exact_search(xq: np.ndarray, chunks: Iterable[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``xq`` over database chunks streamed in order (ids count rows across them):
    the ground truth for recall, without holding the database."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    use_blas(xq.shape[1])
    best = (np.full((len(xq), k), np.inf, np.float32), np.full((len(xq), k), -1, np.int64))
    base = 0
    for x in chunks:
        D, I = faiss.knn(xq, np.ascontiguousarray(x, dtype=np.float32), min(k, len(x)))
        best = merge_topk([best, (D, np.where(I >= 0, I + base, -1))], k)
        base += len(x)
    return best
