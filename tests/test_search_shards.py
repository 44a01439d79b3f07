"""Flat shards built from storage return exactly what one brute-force search returns, with the
record ids the shards answer with; the layout readers cover rows without gaps."""
from __future__ import annotations

import os

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.core.shard_plan import shard_bounds
from study.core.topk import brute_force_knn, l2_normalize
from study.search import layout
from study.search.indexes import IndexParams
from study.search.shards import ShardedIndex, ShardSpec, take_names


def write_embeddings(root: str, x: np.ndarray, files: int = 3, row_group: int = 97, prefix: str = "pub") -> list[str]:
    """An embedding set as the embed stage writes it: ``files`` parquet parts with small row
    groups (so reads cross row-group and file boundaries). Returns the ids in row order."""
    os.makedirs(root, exist_ok=True)
    ids = [f"{prefix}-{i:06d}" for i in range(len(x))]
    for j, (a, b) in enumerate(shard_bounds(len(x), files)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[a:b].ravel(), pa.float32()), x.shape[1])
        pq.write_table(pa.table({"id": ids[a:b], "embedding": emb}), os.path.join(root, f"part-{j:05d}.parquet"),
                       row_group_size=row_group)
    return ids


def flat_specs(es: layout.EmbeddingSet, shards: int, index_dir: str, normalize: bool = False) -> list[ShardSpec]:
    return [ShardSpec(i, a, b - a, es.pieces(a, b), IndexParams("flat", es.d), normalize,
                      os.path.join(index_dir, f"shard-{i:05d}.faiss"))
            for i, (a, b) in enumerate(shard_bounds(es.n, shards))]


def test_layout_reads_every_row_once_in_order(tmp_path):
    x = np.random.default_rng(0).normal(size=(1000, 6)).astype(np.float32)
    ids = write_embeddings(str(tmp_path / "e"), x, files=4, row_group=33)
    es = layout.describe(str(tmp_path / "e"))
    assert es.n == 1000 and es.d == 6 and es.rows == (250, 250, 250, 250)
    assert 9 <= es.name_bytes <= 20  # "pub-000123" plus Parquet's 4-byte length
    got = [layout.vectors(b.column("embedding"), 6) for b in layout.iter_pieces(es.pieces(123, 877), ["embedding"], 50)]
    np.testing.assert_array_equal(np.concatenate(got), x[123:877])
    assert layout.read_ids(es.pieces(240, 260)).to_pylist() == ids[240:260]
    batches = list(layout.iter_batches(es, 64, start=128))
    assert [b[0] for b in batches] == list(range(128, 1000, 64)) and len(batches[-1][1]) == (1000 - 128) % 64
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), x[128:])
    assert sum((b[1] for b in batches), []) == ids[128:]
    rows = [0, 5, 249, 250, 251, 777, 999]
    np.testing.assert_array_equal(layout.read_rows(es, rows), x[rows])


def test_take_names_follows_the_merge():
    rng = np.random.default_rng(1)
    I_all = np.stack([rng.permutation(40)[:12] for _ in range(6)])
    I_all[0, -3:] = -1
    names_all = np.vectorize(lambda i: None if i < 0 else f"r{i}", otypes=[object])(I_all)
    I_out = np.stack([np.sort(r[r >= 0])[:5] for r in I_all])  # any 5 of each row, in another order
    got = take_names(I_out, I_all, names_all)
    assert got.tolist() == [[f"r{i}" for i in row] for row in I_out]
    assert take_names(np.array([[3, -1]]), np.array([[3, 7]]), np.array([["a", "b"]], dtype=object)).tolist() == [["a", None]]


@pytest.mark.parametrize("shards,k,normalize", [(2, 10, False), (3, 25, True), (4, 7, False)])
def test_sharded_search_equals_brute_force(ray_local, tmp_path, shards, k, normalize):
    rng = np.random.default_rng(shards * 100 + k)
    xb = rng.normal(size=(1500, 24)).astype(np.float32)
    xq = rng.normal(size=(130, 24)).astype(np.float32)
    ids = np.asarray(write_embeddings(str(tmp_path / "pub"), xb), dtype=object)
    if normalize:
        xb, xq = l2_normalize(xb), l2_normalize(xq)
    es = layout.describe(str(tmp_path / "pub"))
    index = ShardedIndex(flat_specs(es, shards, str(tmp_path / "idx"), normalize), cpus_per_shard=0.25)
    try:
        assert len(index.actors) == shards and index.nb == 1500
        D, I, names = index.search(xq, k)
        # batching the queries must not change anything either
        batches = [index.search(xq[a : a + 50], k) for a in range(0, len(xq), 50)]
    finally:
        index.close()
    D_ref, I_ref = brute_force_knn(xq, xb, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-4)
    flat = faiss.IndexFlatL2(xb.shape[1])
    flat.add(xb)
    _, I_flat = flat.search(xq, k)
    np.testing.assert_array_equal(I, I_flat)
    assert names.tolist() == ids[I].tolist()
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), I)


def test_k_larger_than_a_shard_pads_only_past_the_database(ray_local, tmp_path):
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(9, 4)).astype(np.float32)
    xq = rng.normal(size=(3, 4)).astype(np.float32)
    write_embeddings(str(tmp_path / "pub"), xb, files=2, row_group=2)
    es = layout.describe(str(tmp_path / "pub"))
    index = ShardedIndex(flat_specs(es, 3, str(tmp_path / "idx")), cpus_per_shard=0.25)
    try:
        D, I, names = index.search(xq, 12)
    finally:
        index.close()
    D_ref, I_ref = brute_force_knn(xq, xb, 9)
    np.testing.assert_array_equal(I[:, :9], I_ref)
    assert (I[:, 9:] == -1).all() and np.isinf(D[:, 9:]).all()
    assert all(n is None for n in names[:, 9:].ravel()) and all(n for n in names[:, :9].ravel())
