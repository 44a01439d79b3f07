"""IVF-PQ shards: trained once on a sample, filled by each shard from storage; recall@10 on seeded
clustered data above a stated bound; nprobe calibrated to the target recall; persisted shards
and the trained quantizer reload without rebuilding and answer identically."""
from __future__ import annotations

import numpy as np
import pytest

from study.config import IVFPQConfig, SearchConfig
from study.core.ivf_params import nprobe_ladder, recall_at_k
from study.core.topk import brute_force_knn, l2_normalize
from study.search import layout
from study.search.build import open_index
from study.search.recall import measure_recall, sample_queries
from test_search_shards import write_embeddings

RECALL_BOUND = 0.85  # recall@10 of the calibrated index against exact search, on fresh queries
NLIST, CODE_SIZE = 64, 8  # small enough to train in a second or two on a shared 2-core machine


def clustered(n: int, d: int, seed: int, centres: int = 128, sub: int = 4) -> np.ndarray:
    """Seeded clusters, each spread over its own ``sub``-dimensional subspace (embeddings have a
    low intrinsic dimension), plus a little isotropic noise; L2-normalised."""
    crng, rng = np.random.default_rng(0), np.random.default_rng(seed)
    c = crng.standard_normal((centres, d)).astype(np.float32)
    bases = crng.standard_normal((centres, d, sub)).astype(np.float32) / np.sqrt(sub)
    lab = rng.integers(0, centres, n)
    x = c[lab] + np.einsum("nds,ns->nd", bases[lab], rng.standard_normal((n, sub)).astype(np.float32))
    return l2_normalize(x + 0.05 * rng.standard_normal((n, d)).astype(np.float32))


def config(**kw) -> SearchConfig:
    ivf = IVFPQConfig(nlist=NLIST, code_size=CODE_SIZE, target_recall=0.9)
    return SearchConfig(**{"index": "ivfpq", "k": 10, "shards": 2, "cpus_per_shard": 0.25, "shard_headroom_gb": 0.05,
                           "recall_queries": 200, "ivf": ivf, **kw})


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    xb, xq_sample, xq = clustered(6000, 32, 1), clustered(300, 32, 2), clustered(200, 32, 3)
    ids = write_embeddings(str(root / "public"), xb, files=2, row_group=500)
    write_embeddings(str(root / "queries"), xq_sample, files=1, prefix="q")
    return layout.describe(str(root / "public")), layout.describe(str(root / "queries")), xb, xq, np.asarray(ids, dtype=object)


def test_ivfpq_recall_on_clustered_data_and_persisted_reload(ray_local, sets, tmp_path):
    public, queries, xb, xq, ids = sets
    cfg, logs = config(), []
    index, info = open_index(cfg, public, str(tmp_path / "idx"), logs.append)
    try:
        want = {"kind": "ivfpq", "nlist": NLIST, "m": CODE_SIZE, "shards": 2, "train_size": 6000}
        assert {key: info["index"][key] for key in want} == want
        assert info["shards_built"] == 2 and info["train_seconds"] > 0
        samples = sample_queries({"q": queries}, cfg.recall_queries, cfg.ivf.seed, normalize=False)
        nprobe, recall = measure_recall(index, samples, cfg.k, NLIST, 0, cfg.ivf.target_recall, logs.append)
        assert nprobe in nprobe_ladder(NLIST) and recall["queries"] == 200
        assert recall["recall@10"] == recall["tried"][str(nprobe)]
        # the ladder stops at the target, or else tries every step and keeps the best
        assert recall["recall@10"] >= 0.9 or list(recall["tried"]) == [str(p) for p in nprobe_ladder(NLIST)]
        D, I, names = index.search(xq, 10, nprobe)
    finally:
        index.close()
    _, I_exact = brute_force_knn(xq, xb, 10)
    fresh = recall_at_k(I, I_exact, 10).mean()
    assert fresh >= RECALL_BOUND, fresh
    assert names.tolist() == ids[I].tolist()

    # Rerun: the trained quantizer and every shard load from storage; nothing is rebuilt.
    again, info2 = open_index(cfg, public, str(tmp_path / "idx"), logs.append)
    try:
        assert info2["shards_loaded"] == 2 and info2["shards_built"] == 0 and info2["train_seconds"] == 0
        assert info2["index_dir"] == info["index_dir"]
        D2, I2, _ = again.search(xq, 10, nprobe)
    finally:
        again.close()
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)
    assert sum("training IVF" in m for m in logs) == 1


def test_fixed_nprobe_is_kept_and_a_changed_config_gets_its_own_index(ray_local, sets, tmp_path):
    public, queries, _, _, _ = sets
    cfg = config(ivf=IVFPQConfig(nlist=32, code_size=CODE_SIZE, nprobe=4))
    index, info = open_index(cfg, public, str(tmp_path / "idx"), lambda m: None)
    try:
        samples = sample_queries({"q": queries}, 100, 0, normalize=False)
        nprobe, recall = measure_recall(index, samples, 10, 32, cfg.ivf.nprobe, 0.9, lambda m: None)
    finally:
        index.close()
    assert nprobe == 4 and list(recall["tried"]) == ["4"] and 0 < recall["recall@10"] <= 1
    assert info["index"]["nlist"] == 32 and info["shards_built"] == 2
