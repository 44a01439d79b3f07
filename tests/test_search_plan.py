"""The pure maths of the search stage: IVF-PQ parameters by the FAISS guidelines, recall, and the
shard memory model (no Ray, no FAISS)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.core import ivf_params as ivf
from study.core.shard_plan import GIB, bytes_per_vector, fixed_bytes, plan_shards, shard_bounds


def test_shard_bounds_cover_without_gaps():
    for nb, shards in [(10, 3), (7, 7), (5, 9), (1000, 4)]:
        bounds = shard_bounds(nb, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == nb
        assert all(a < b for a, b in bounds)
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("nb", [100_000, 1_000_000, 50_000_000, 400_000_000])
def test_nlist_and_training_size_follow_the_wiki(nb):
    nlist = ivf.choose_nlist(nb)
    assert 4 * math.sqrt(nb) - 1 <= nlist <= 16 * math.sqrt(nb)
    assert nlist * ivf.MIN_POINTS_PER_CENTROID <= nb
    n_train = ivf.training_size(nb, nlist)
    assert 30 * nlist <= n_train <= 256 * nlist and n_train >= ivf.PQ_MIN_TRAIN


def test_small_sets_cap_nlist_and_training_at_what_exists():
    assert ivf.choose_nlist(100) == 2 and ivf.choose_nlist(10) == 1
    assert ivf.choose_nlist(10_000) == 10_000 // 39 < 4 * 100  # the training floor beats 4·sqrt(N)
    assert ivf.training_size(5000, ivf.choose_nlist(5000)) == 5000


def test_code_size_is_the_largest_that_fits_and_divides_d():
    assert ivf.code_size_candidates(128)[:3] == [64, 32, 16]
    assert ivf.code_size_candidates(512)[0] == 64 and ivf.code_size_candidates(6) == [2, 1]
    assert ivf.choose_code_size(128, 10**6, 1e12) == 64
    # 72 bytes per vector do not fit 50 MB for 1M vectors; 32 + 8 = 40 do
    assert ivf.choose_code_size(128, 10**6, 50e6) == 32
    assert ivf.choose_code_size(128, 10**6, 1.0) == ivf.code_size_candidates(128)[-1]


def test_nprobe_ladder_and_pick():
    assert ivf.nprobe_ladder(100) == [8, 16, 32, 64, 100]
    assert ivf.nprobe_ladder(4) == [4]
    assert ivf.pick_nprobe({8: 0.7, 16: 0.91, 32: 0.95}, 0.9) == 16
    assert ivf.pick_nprobe({8: 0.7, 16: 0.8}, 0.9) == 16  # none reaches: the best


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, -1]])
    approx = np.array([[3, 9, 1], [5, 4, 7]])
    np.testing.assert_allclose(ivf.recall_at_k(approx, exact, 3), [2 / 3, 1.0])
    np.testing.assert_allclose(ivf.recall_at_k(approx, exact, 1), [0.0, 0.0])
    with pytest.raises(ValueError):
        ivf.recall_at_k(approx[:1], exact, 3)


def test_recall_at_k_equals_set_intersection():
    rng = np.random.default_rng(3)
    exact = np.stack([rng.permutation(60)[:20] for _ in range(40)])
    approx = np.stack([rng.permutation(60)[:20] for _ in range(40)])
    exact[::7, -4:] = -1
    approx[::5, -2:] = -1
    for k in (1, 5, 20):
        naive = [len(set(a[:k]) & set(e[:k][e[:k] >= 0])) / max(1, (e[:k] >= 0).sum()) for a, e in zip(approx, exact)]
        np.testing.assert_allclose(ivf.recall_at_k(approx, exact, k), naive)


def test_bytes_per_vector_and_fixed_part():
    assert bytes_per_vector("flat", 512) == 2048 + 8
    assert bytes_per_vector("ivfpq", 512, m=64, name_bytes=20) == (64 + 8) * 1.5 + 28
    assert fixed_bytes("flat", 512) == 0
    # centroids + codebooks + precomputed table (4096 * 16 * 256 * 4 = 64 MiB, under FAISS's 2 GiB limit)
    assert fixed_bytes("ivfpq", 128, nlist=4096, m=16) == 4096 * 128 * 4 + 256 * 128 * 4 + 4096 * 16 * 256 * 4
    big = 300_000  # its table would be 18 GiB: FAISS does not precompute it
    assert fixed_bytes("ivfpq", 128, nlist=big, m=64) == big * 128 * 4 + 256 * 128 * 4
    with pytest.raises(ValueError):
        bytes_per_vector("hnsw", 8)


def test_auto_shards_from_the_memory_model():
    # 50M x 512 flat with 24-byte ids: 2080 bytes a vector, 96.9 GiB in all
    per_vector = bytes_per_vector("flat", 512, name_bytes=24)
    assert per_vector == 2080
    one = plan_shards(50_000_000, per_vector, 0, GIB, 64 * GIB, nodes=1)
    # fewest shards that fit a node beside their headroom: ceil(96.9 / 63) = 2, but a node holds
    # only one 49.4 GiB shard, so the plan needs 2 nodes (the stage refuses a 1-node cluster)
    assert (one.shards, one.shards_per_node, one.nodes) == (2, 1, 2)
    assert one.vectors_per_shard == 25_000_000 and one.shard_bytes == 25_000_000 * 2080 + GIB
    four = plan_shards(50_000_000, per_vector, 0, GIB, 64 * GIB, nodes=4)
    assert four.shards == 4 and four.nodes == 2  # one shard per node at least; two would fit a node
    assert four.index_bytes == 50_000_000 * 2080
    # IVF-PQ, 400M x 512, 64-byte codes, nlist 80000: 140 bytes a vector plus 164 MB of centroids
    ivf_vector = bytes_per_vector("ivfpq", 512, m=64, name_bytes=24)
    fixed = fixed_bytes("ivfpq", 512, nlist=80_000, m=64)
    laion = plan_shards(400_000_000, ivf_vector, fixed, GIB, 64 * GIB, nodes=2)
    assert math.ceil(400_000_000 * ivf_vector / (64 * GIB - fixed - GIB)) == 1
    assert laion.shards == 2 and laion.shards_per_node == 2 and laion.nodes == 1  # one per node all the same


def test_given_shard_count_and_impossible_plans():
    plan = plan_shards(1000, 100.0, 0, 0, 1e6, nodes=1, shards=3)
    assert plan.shards == 3 and plan.vectors_per_shard == 334
    assert plan_shards(5, 100.0, 0, 0, 1e6, nodes=3, shards=0).shards == 3
    assert plan_shards(2, 100.0, 0, 0, 1e6, nodes=3, shards=0).shards == 2  # never an empty shard
    with pytest.raises(ValueError, match="cannot hold a shard"):
        plan_shards(1000, 100.0, 0, 2 * GIB, GIB, nodes=1)
    assert plan_shards(1000, 100.0, 0, 2 * GIB, GIB, nodes=1, shards=2).nodes == 0  # does not fit at all
