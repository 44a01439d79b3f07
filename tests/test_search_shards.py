"""Sharded FAISS actors return exactly what one brute-force search returns."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from study.core.topk import brute_force_knn, l2_normalize
from study.search.shards import ShardedIndex, shard_bounds


def test_shard_bounds_cover_without_gaps():
    for nb, shards in [(10, 3), (7, 7), (5, 9), (1000, 4)]:
        bounds = shard_bounds(nb, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == nb
        assert all(a < b for a, b in bounds)
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


@pytest.mark.parametrize("shards,k,normalize", [(2, 10, False), (3, 25, True), (4, 7, False)])
def test_sharded_search_equals_brute_force(ray_local, shards, k, normalize):
    rng = np.random.default_rng(shards * 100 + k)
    xb = rng.normal(size=(1500, 24)).astype(np.float32)
    xq = rng.normal(size=(130, 24)).astype(np.float32)
    if normalize:
        xb, xq = l2_normalize(xb), l2_normalize(xq)
    index = ShardedIndex(xb, shards, cpus_per_shard=0.25)
    try:
        assert len(index.actors) == shards
        D, I = index.search(xq, k)
        # batching the queries must not change anything either
        batches = list(index.search_batches(xq, k, batch_size=50))
    finally:
        index.close()
    D_ref, I_ref = brute_force_knn(xq, xb, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-4)
    flat = faiss.IndexFlatL2(xb.shape[1])
    flat.add(xb)
    _, I_flat = flat.search(xq, k)
    np.testing.assert_array_equal(I, I_flat)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), I)


def test_k_larger_than_a_shard_pads_only_past_the_database(ray_local):
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(9, 4)).astype(np.float32)
    xq = rng.normal(size=(3, 4)).astype(np.float32)
    index = ShardedIndex(xb, 3, cpus_per_shard=0.25)
    try:
        D, I = index.search(xq, 12)
    finally:
        index.close()
    D_ref, I_ref = brute_force_knn(xq, xb, 9)
    np.testing.assert_array_equal(I[:, :9], I_ref)
    assert (I[:, 9:] == -1).all() and np.isinf(D[:, 9:]).all()
