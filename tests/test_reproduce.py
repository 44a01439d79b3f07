"""The same config and seed give the same study: the two runs of ``configs/tiny.yaml`` in the
``tiny_pair`` fixture, each a fresh process with its own Ray instance and other string hashing
than the other (so set or dict order that follows the hashing cannot leak into the numbers), ran
at the same time; every output that carries a number is compared."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import torch

from study import storage
from study.config_load import load_config
from study.data.loading import read_split
from study.frame.context import RunContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _context(run) -> RunContext:
    ctx = RunContext.create(load_config(os.path.join(ROOT, "configs/tiny.yaml"), [], run.output))
    assert ctx.run_dir == run.run_dir
    return ctx


def _search_results(ctx: RunContext) -> dict[str, dict]:
    """{result dir: {query id: (neighbour ids, distances)}} of every persisted search result."""
    import pyarrow.parquet as pq

    root, out = ctx.stage_dir("search"), {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)):
        table = pq.read_table(path)
        rows = out.setdefault(os.path.relpath(os.path.dirname(path), root), {})
        for q, n, d in zip(*(table.column(c).to_pylist() for c in ("query_id", "neighbor_ids", "distances"))):
            rows[q] = (n, d)
    return out


def test_same_config_and_seed_reproduce(tiny_pair):
    assert all(run.returncode == 0 for run in tiny_pair), [run.stderr for run in tiny_pair]
    ctx, other = (_context(run) for run in tiny_pair)
    assert other.run_dir != ctx.run_dir
    report = storage.read_json(ctx.report_json)

    # Splits: the manifest (counts, seed, digest) and the ids and labels of every split.
    assert storage.read_json(other.manifest) == storage.read_json(ctx.manifest)
    for split, n in report["splits"]["counts"].items():
        first, second = read_split(ctx.splits_dir, split), read_split(other.splits_dir, split)
        assert len(first[0]) == n and all(np.array_equal(a, b) for a, b in zip(first, second)), split
    # Training on CPU: bit-identical weights.
    for model in ("model_a", "model_b"):
        a, b = (torch.load(c.stage_dir("train", model, "model.pt"), weights_only=False)["state_dict"] for c in (ctx, other))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    # Search: the same queries, neighbours and distances, exactly. The rows' order is not compared:
    # it follows the embedding files, which Ray Data writes in the order its tasks finish, and
    # every reader of the results aligns them by query id.
    first, second = _search_results(ctx), _search_results(other)
    assert len(first) == 12 and first.keys() == second.keys()  # 2 models x 3 sets x 2 spaces
    for where, rows in first.items():
        assert rows and rows.keys() == second[where].keys(), where
        assert all(rows[q] == second[where][q] for q in rows), where
    # Every number of the report.
    again = storage.read_json(other.report_json)
    for key in ("splits", "embedded", "results", "headline", "one_model", "utility"):
        assert key in report and json.dumps(again[key], sort_keys=True) == json.dumps(report[key], sort_keys=True), key
