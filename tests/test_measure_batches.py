"""The measure stage reads search results in batches and looks ids up without dictionaries:
equal to a per-record dictionary oracle (the earlier implementation), whatever the batch size."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study.core.topk import label_votes, predict_from_votes
from study.frame.kinds import side_ids
from study.kinds.ssl_dejavu.entries import build_sides
from study.kinds.ssl_dejavu.outcomes import split_labels
from study.search.results import ResultWriter
from test_measure_checks import knn_outcomes


def _write_split(splits_dir, name, ids, labels):
    d = os.path.join(splits_dir, "members", f"split={name}")
    os.makedirs(d, exist_ok=True)
    half = len(ids) // 2  # two member files, as the splits stage writes several
    for j, sl in enumerate((slice(0, half), slice(half, None))):
        pq.write_table(pa.table({"id": pa.array(ids[sl], pa.string()), "label": pa.array(labels[sl], pa.int32())}),
                       os.path.join(d, f"part-{j}.parquet"))


def _oracle(q_ids, nbrs, public_labels, truth, num_classes):
    k = max(len(n) for n in nbrs)
    nl = np.full((len(q_ids), k), -1, dtype=np.int64)
    for r, row in enumerate(nbrs):
        nl[r, : len(row)] = [public_labels.get(n, -1) if n is not None else -1 for n in row]
    pred, top5, conf = predict_from_votes(label_votes(nl, num_classes), top=5)
    t = np.array([truth[q] for q in q_ids])
    return {q: (bool(a), bool(b), float(c)) for q, a, b, c in zip(q_ids, pred == t, (top5 == t[:, None]).any(1), conf)}


def test_batched_outcomes_equal_the_dictionary_oracle(tmp_path):
    rng = np.random.default_rng(3)
    splits_dir, C = str(tmp_path / "splits"), 6
    pub = [f"p{i:05d}" for i in rng.permutation(400)]
    pub_labels = rng.integers(-1, C, len(pub))  # -1: a public record without a label
    queries = [f"q{i:04d}" for i in rng.permutation(90)]
    q_labels = rng.integers(0, C, len(queries))
    _write_split(splits_dir, "public", pub, pub_labels)
    _write_split(splits_dir, "target", queries, q_labels)
    nbrs = [list(rng.choice(pub, 12, replace=False)) for _ in queries]
    nbrs[5] = nbrs[5][:4] + [None] * 8  # fewer neighbours than k
    out = {}
    for model, seed in (("model_a", 0), ("model_b", 1)):
        uri = str(tmp_path / model)
        order = np.random.default_rng(seed).permutation(len(queries))  # result order differs by model
        writer = ResultWriter(uri, "key", rows_per_part=32)
        writer.write([queries[i] for i in order], np.array([nbrs[i] for i in order], dtype=object),
                     np.zeros((len(queries), 12), np.float32))
        writer.close()
        expected = _oracle(queries, nbrs, dict(zip(pub, pub_labels.tolist())), dict(zip(queries, q_labels.tolist())), C)
        public, truth = split_labels(splits_dir, "public"), split_labels(splits_dir, "target")
        for batch_rows in (7, 1000):
            got, counts = knn_outcomes(uri, public, truth, C, batch_rows=batch_rows)
            assert counts["records"] == len(queries) and counts["unlabelled_queries"] == 0
            assert list(got.ids) == sorted(queries)
            assert {q: (bool(a), bool(b), float(c)) for q, a, b, c in zip(got.ids, got.top1, got.top5, got.confidence)} == expected
        out[(model, "holdout")] = got
    a, b = build_sides(out, [("a", "holdout", "model_a", "model_b"), ("b", "holdout", "model_b", "model_a")], "null",
                       4)["top1"]
    assert list(a.ids) == side_ids(queries, "null", "a", 4) and list(b.ids) == side_ids(queries, "null", "b", 4)
    assert len(a) + len(b) == len(queries)
