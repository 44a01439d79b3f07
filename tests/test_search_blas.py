"""Every batch the search stage sends takes FAISS's BLAS path, checked without timing anything.

FAISS's two exact-L2 paths round differently: the per-query scan sums squared differences, the
BLAS path expands ||x||^2 + ||y||^2 - 2 x.y in float32, which cancels catastrophically for two
long vectors close together. A query at squared distance exactly 1 from a database vector of norm
10^4 reads 1.0 on the scan and something else (0 or a multiple of float32's spacing at 10^8) on
BLAS, so the distance FAISS returns tells which path it took. FAISS's rule, documented with
``distance_compute_blas_threshold``: BLAS when nq * d >= the threshold.
"""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from study.search import indexes, layout
from study.search.indexes import BLAS_MIN_QUERIES, IndexParams, blas_threshold
from study.search.shards import ShardServer
from tests.test_search_shards import flat_specs, write_embeddings

D = 8


def probe_data(nq: int) -> tuple[np.ndarray, np.ndarray]:
    """(xb (200, D), xq (nq, D)): xb[0] has norm 10^4; every query is at squared distance 1 from it
    (exactly representable), the other database rows far away."""
    rng = np.random.default_rng(0)
    xb = rng.uniform(-1, 1, (200, D)).astype(np.float32) * 100
    xb[0] = 0
    xb[0, 0] = 1e4
    xq = np.zeros((nq, D), np.float32)
    xq[:, 0] = 1e4 + 1
    return xb, xq


def took_blas(D_first: np.ndarray) -> np.ndarray:
    return D_first != 1.0


@pytest.fixture()
def probe_index():
    """A flat index of the probe's database; FAISS's threshold is restored afterwards."""
    index = faiss.IndexFlatL2(D)
    index.add(probe_data(1)[0])
    default = faiss.cvar.distance_compute_blas_threshold
    yield index
    faiss.cvar.distance_compute_blas_threshold = default


def test_the_probe_tells_the_two_paths_apart(probe_index):
    xq = probe_data(40)[1]
    faiss.cvar.distance_compute_blas_threshold = 10**9  # the scan for any batch
    Dist, I = probe_index.search(xq, 3)
    assert (I[:, 0] == 0).all() and not took_blas(Dist[:, 0]).any()
    faiss.cvar.distance_compute_blas_threshold = 1  # BLAS for any batch
    Dist, I = probe_index.search(xq, 3)
    assert (I[:, 0] == 0).all() and took_blas(Dist[:, 0]).all()


def test_faiss_rule_is_nq_times_d_against_the_threshold(probe_index):
    faiss.cvar.distance_compute_blas_threshold = 30 * D
    for nq, blas in ((29, False), (30, True), (31, True)):
        Dist, _ = probe_index.search(probe_data(nq)[1], 1)
        assert took_blas(Dist[:, 0]).all() == blas and took_blas(Dist[:, 0]).any() == blas, nq


@pytest.mark.parametrize("query_batch_size", [250, 1024])
def test_every_batch_of_the_stage_takes_blas(tmp_path, query_batch_size):
    """Through a shard server (as the stage's actors run it): full batches of the configured size
    and a tail of at least BLAS_MIN_QUERIES take BLAS; a smaller tail is at most that many scans."""
    xb, _ = probe_data(1)
    write_embeddings(str(tmp_path / "pub"), xb, files=2)
    es = layout.describe(str(tmp_path / "pub"))
    server = ShardServer(flat_specs(es, 1, str(tmp_path / "idx"))[0])
    for nq in (query_batch_size, 937 % query_batch_size or query_batch_size, BLAS_MIN_QUERIES):
        faiss.cvar.distance_compute_blas_threshold = 128_000  # FAISS 1.15's default: the server sets its own
        Dist, I, _ = server.search(probe_data(nq)[1], 3)
        assert (I[:, 0] == 0).all() and took_blas(Dist[:, 0]).all(), nq
        assert faiss.cvar.distance_compute_blas_threshold == blas_threshold(D) <= nq * D
    Dist, _, _ = server.search(probe_data(BLAS_MIN_QUERIES - 1)[1], 3)
    assert not took_blas(Dist[:, 0]).any()


def test_ivf_coarse_quantiser_and_exact_search_take_blas():
    xb, xq = probe_data(BLAS_MIN_QUERIES)
    faiss.cvar.distance_compute_blas_threshold = 128_000
    Dist, I = indexes.exact_search(xq, iter([xb[:100], xb[100:]]), 3)
    assert (I[:, 0] == 0).all() and took_blas(Dist[:, 0]).all()
    # IVF (and IVF-PQ): the coarse quantiser is a flat index searched with the whole batch under
    # the same process-wide rule, so the threshold set for the search covers it.
    quantizer = faiss.IndexFlatL2(D)
    ivf = faiss.IndexIVFFlat(quantizer, D, 1)
    ivf.train(xb)
    ivf.add(xb)
    faiss.cvar.distance_compute_blas_threshold = 128_000
    _, I = indexes.search(ivf, xq, 3, nprobe=1)
    assert (I[:, 0] == 0).all() and faiss.cvar.distance_compute_blas_threshold == blas_threshold(D)


def test_results_stay_exact_at_batch_sizes_on_both_sides_of_the_rule():
    from study.core.topk import brute_force_knn

    rng = np.random.default_rng(3)
    xb = rng.normal(size=(3000, 32)).astype(np.float32)
    index = faiss.IndexFlatL2(32)
    index.add(xb)
    for nq in (1, BLAS_MIN_QUERIES - 1, BLAS_MIN_QUERIES, 300):
        xq = rng.normal(size=(nq, 32)).astype(np.float32)
        Dist, I = indexes.search(index, xq, 10)
        D_want, I_want = brute_force_knn(xq, xb, 10)
        np.testing.assert_array_equal(I, I_want)
        np.testing.assert_allclose(Dist, D_want, rtol=1e-4, atol=1e-3)
