"""The search stage over embedding files on storage: streamed batches equal one-shot search and
brute force, reruns load the persisted shards, an interrupted stage resumes after its last
finished part, a changed public set rebuilds, and the gallery's reader filters by query id."""
from __future__ import annotations

import os

import numpy as np
import pytest

from study import storage
from study.config_load import load_config
from study.core.topk import brute_force_knn, l2_normalize
from study.frame.context import RunContext
from study.stages.search import run_search
from study.search import layout
from study.search.build import open_index
from study.search.results import PARTS, read_neighbours, read_results
from test_search_shards import write_embeddings

SETS = {"public": 700, "target": 130, "reference": 90, "holdout": 50}
OVERRIDES = ["search.representations=[projector]", "search.k=7", "search.shards=2", "search.cpus_per_shard=0.25",
             "search.query_batch_size=40", "search.rows_per_file=100", "search.shard_headroom_gb=0.05"]


@pytest.fixture(scope="module")
def stage(ray_local, tmp_path_factory):
    """A run directory holding projector embeddings of every set for both models; the stage run once."""
    cfg = load_config(None, OVERRIDES, str(tmp_path_factory.mktemp("runs")))
    ctx = RunContext.create(cfg)
    data = {}
    for m, model in enumerate(("model_a", "model_b")):
        rng = np.random.default_rng(m)
        for s, n in SETS.items():
            x = rng.normal(size=(n, 16)).astype(np.float32)
            ids = write_embeddings(ctx.embeddings(model, s, "projector"), x, files=2, row_group=30, prefix=s)
            data[(model, s)] = (np.asarray(ids, dtype=object), l2_normalize(x))
    logs = []
    ctx.log = lambda stage, msg: logs.append(msg)
    summary = run_search(ctx)
    return ctx, data, summary, logs


def test_stage_results_equal_brute_force_in_query_order(stage):
    ctx, data, summary, _ = stage
    for model in ("model_a", "model_b"):
        pub_ids, xb = data[(model, "public")]
        for s in ("target", "reference", "holdout"):
            q_ids, xq = data[(model, s)]
            got_q, got_n = read_results(ctx.search_results(model, s, "projector"))
            assert got_q == list(q_ids)
            _, I = brute_force_knn(xq, xb, 7)
            assert got_n == [list(pub_ids[row]) for row in I]
            assert summary[f"{model}/{s}/projector"] == {"queries": SETS[s], "k": 7}
        info = summary["indexes"][f"{model}/projector"]
        assert info["index"]["kind"] == "flat" and info["index"]["shards"] == 2 and info["shards_built"] == 2
    # 130 queries in batches of 40, parts of 120 rows (100 rounded up to whole batches)
    parts = sorted(os.listdir(ctx.search_results("model_a", "target", "projector")))
    assert parts == [PARTS, "part-00000.parquet", "part-00001.parquet"]


def test_streamed_batches_equal_one_shot_search(stage):
    ctx, data, _, _ = stage
    pub_ids, _ = data[("model_b", "public")]
    _, xq = data[("model_b", "target")]
    es = layout.describe(ctx.embeddings("model_b", "public", "projector"))
    index, info = open_index(ctx.cfg.search, es, ctx.search_index("model_b", "projector"), lambda m: None)
    try:
        assert info["shards_loaded"] == 2 and info["shards_built"] == 0
        _, I, names = index.search(xq, 7)  # every query in one batch
    finally:
        index.close()
    _, streamed = read_results(ctx.search_results("model_b", "target", "projector"))
    assert streamed == names.tolist() == [list(pub_ids[row]) for row in I]


def test_gallery_reader_filters_by_query_id(stage):
    ctx, data, _, _ = stage
    q_ids, _ = data[("model_a", "reference")]
    uri = ctx.search_results("model_a", "reference", "projector")
    all_q, all_n = read_results(uri)
    want = [q_ids[3], q_ids[77], "no-such-id"]
    got = read_neighbours(uri, want)
    assert got == {q: n for q, n in zip(all_q, all_n) if q in want}


def test_rerun_loads_shards_and_resumes_after_the_last_finished_part(stage):
    ctx, _, first, _ = stage
    uri = ctx.search_results("model_a", "target", "projector")
    before = read_results(uri)
    # An interrupted stage: the second part of one set never finished.
    os.remove(os.path.join(uri, "part-00001.parquet"))
    state = storage.read_json(os.path.join(uri, PARTS))
    storage.write_json(os.path.join(uri, PARTS), {**state, "complete": 1})
    logs = []
    ctx.log = lambda stage, msg: logs.append(msg)
    again = run_search(ctx)
    assert read_results(uri) == before
    assert any("target: resuming after 120 of 130 queries" in m for m in logs), logs
    for key, info in again["indexes"].items():
        assert info["shards_built"] == 0 and info["shards_loaded"] == 2, key  # nothing rebuilt
        assert info["index_dir"] == first["indexes"][key]["index_dir"]


def test_changed_public_set_builds_a_new_index(stage, tmp_path):
    ctx, _, first, _ = stage
    es = layout.describe(ctx.embeddings("model_a", "public", "projector"))
    x = np.random.default_rng(9).normal(size=(300, 16)).astype(np.float32)
    write_embeddings(str(tmp_path / "changed"), x, files=1)
    changed = layout.describe(str(tmp_path / "changed"))
    index, info = open_index(ctx.cfg.search, changed, ctx.search_index("model_a", "projector"), lambda m: None)
    index.close()
    assert info["shards_built"] == 2 and info["index_dir"] != first["indexes"]["model_a/projector"]["index_dir"]
    assert es.fingerprint != changed.fingerprint
