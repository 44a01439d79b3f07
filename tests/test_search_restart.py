"""A shard actor killed between query batches, or dying in the middle of one, is restarted by Ray,
reloads its persisted shard, and the results equal an undisturbed run's."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import ray

from study.config import SearchConfig
from study.core.topk import l2_normalize
from study.stages.search import search_set
from study.search import layout
from study.search.build import open_index
from study.search.results import ResultWriter, read_results
from study.search.shards import ShardServer
from test_search_shards import write_embeddings

CFG = SearchConfig(k=8, shards=2, cpus_per_shard=0.25, shard_headroom_gb=0.05, query_batch_size=25, rows_per_file=50)


# Ray's workers cannot import this test module: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class DiesOnce(ShardServer):
    """Exits in the middle of a search call when its marker file exists, removing it first, so
    the retried call on the restarted actor goes through."""

    def search(self, xq, k, nprobe=0):
        marker = self.spec.index_uri + ".die"
        if os.path.exists(marker):
            os.remove(marker)
            os._exit(1)
        return super().search(xq, k, nprobe)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    rng = np.random.default_rng(4)
    write_embeddings(str(root / "public"), rng.normal(size=(900, 12)).astype(np.float32), files=3, row_group=64)
    write_embeddings(str(root / "queries"), rng.normal(size=(110, 12)).astype(np.float32), files=2, prefix="q")
    return layout.describe(str(root / "public")), layout.describe(str(root / "queries")), root


def restarted(actor, pid: int) -> dict:
    info = ray.get(actor.info.remote())
    assert info["pid"] != pid and info["loaded"], info  # a new process that loaded, not rebuilt
    return info


def test_kill_between_batches(ray_local, sets):
    public, queries, root = sets
    batches = [l2_normalize(x) for _, _, x in layout.iter_batches(queries, 25)]
    index, info = open_index(CFG, public, str(root / "idx-between"), lambda m: None)
    try:
        assert info["shards_built"] == 2
        undisturbed = [index.search(x, CFG.k) for x in batches]
        pid = index.infos[1]["pid"]
        disturbed = [index.search(batches[0], CFG.k)]
        ray.kill(index.actors[1], no_restart=False)
        disturbed += [index.search(x, CFG.k) for x in batches[1:]]
        restarted(index.actors[1], pid)
    finally:
        index.close()
    for (D0, I0, n0), (D1, I1, n1) in zip(undisturbed, disturbed):
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
        assert n1.tolist() == n0.tolist()


def test_death_during_a_batch_leaves_the_stage_results_unchanged(ray_local, sets, tmp_path):
    public, queries, root = sets
    index, info = open_index(CFG, public, str(root / "idx-during"), lambda m: None, server_cls=DiesOnce)
    try:
        search_set(index, queries, ResultWriter(str(tmp_path / "calm"), "key", 50), CFG, 0)
        pid = index.infos[0]["pid"]
        open(os.path.join(info["index_dir"], "shard-00000.faiss.die"), "w").close()  # dies in its next call
        search_set(index, queries, ResultWriter(str(tmp_path / "stormy"), "key", 50), CFG, 0)
        restarted(index.actors[0], pid)
    finally:
        index.close()
    assert read_results(str(tmp_path / "stormy")) == read_results(str(tmp_path / "calm"))
    assert len(read_results(str(tmp_path / "calm"))[0]) == queries.n

