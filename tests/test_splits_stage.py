"""The streamed splits stage (Ray Data tasks and aggregates) equals the in-memory plan."""
from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from study import storage
from study.config import DataConfig, SplitConfig, StudyConfig
from study.core.split_plan import SplitPlan
from study.core.splits import UNASSIGNED, assign_splits, split_digest
from study.data import records, synthetic
from study.data.loading import read_split
from study.errors import StudyError
from study.frame.context import RunContext
from study.stages.splits import run_splits, verify_splits

FRACTIONS = {"target": 0.2, "reference": 0.2, "public": 0.4, "holdout": 0.1, "shared": 0.0}


def _context(tmp_path, num=240, shard_size=70) -> RunContext:
    cfg = StudyConfig(output=str(tmp_path), data=DataConfig(num_images=num, image_size=16, shard_size=shard_size),
                      splits=SplitConfig(seed=3, fractions=FRACTIONS))
    ctx = RunContext.create(cfg)
    for shard, rows in synthetic.iter_shards(cfg.data):
        records.write_shard(storage.join(ctx.data_root, f"part-{shard:05d}.parquet"), rows)
    return ctx


def test_streamed_plan_equals_in_memory_plan(ray_local, tmp_path):
    ctx = _context(tmp_path)
    manifest = run_splits(ctx)
    meta = records.dataset(ctx.data_root).to_table(columns=["id", "label"])
    ids = np.asarray(meta.column("id").to_pylist(), dtype=object)
    labels = np.asarray(meta.column("label").to_pylist())
    split_of = assign_splits(list(ids), FRACTIONS, 3)
    members = {}
    for name in FRACTIONS:
        got_ids, got_labels = read_split(ctx.splits_dir, name)
        mask = split_of == name
        order = np.argsort(ids[mask].astype(str))
        assert list(got_ids) == list(ids[mask][order])
        assert list(got_labels) == list(labels[mask][order])
        assert manifest["counts"][name] == int(mask.sum())
        if mask.any():
            members[name] = list(ids[mask])
    assert manifest["unassigned"] == int((split_of == UNASSIGNED).sum())
    assert manifest["num_classes"] == int(labels.max()) + 1
    assert manifest["digest"] == split_digest(members, 3)
    assert verify_splits(ctx.splits_dir)["digest"] == manifest["digest"]
    # A member file changed after planning is caught before any model trains.
    victim = sorted(glob.glob(os.path.join(ctx.splits_dir, "members", "split=public", "*.parquet")))[0]
    table = pq.read_table(victim)
    pq.write_table(table.slice(1), victim)
    with pytest.raises(StudyError, match="do not match their manifest digest"):
        verify_splits(ctx.splits_dir)


def test_empty_split_is_a_clear_error(ray_local, tmp_path):
    ctx = _context(tmp_path, num=12, shard_size=12)
    cfg = StudyConfig(output=str(tmp_path), data=ctx.cfg.data,
                      splits=SplitConfig(fractions={"target": 0.001, "reference": 0.5, "public": 0.49}))
    with pytest.raises(StudyError, match="split 'target' is empty"):
        run_splits(RunContext(cfg, ctx.run_dir))


def test_embed_plan_counted_by_tasks_equals_in_memory_plan(ray_local, tmp_path):
    from study.config import CropConfig
    from study.embed.captions import plan_captions
    from study.embed.views import plan_crops
    from study.stages.embed_plan import count_plan

    ctx = _context(tmp_path, num=150, shard_size=40)
    sets = ("target", "reference", "holdout")
    meta = records.dataset(ctx.data_root).to_table(columns=["id", "width", "height", "label", "boxes", "caption", "objects"])
    split_of = assign_splits(meta.column("id").to_pylist(), FRACTIONS, 3)
    crop_cfg = CropConfig(min_side=8)  # some records get no background crop

    def crops(batch, s, wanted):
        return plan_crops(batch, s, wanted, crop_cfg)[1]

    public, plan = count_plan(ctx.data_root, ["id", "width", "height", "label", "boxes"], crops, sets, SplitPlan(FRACTIONS, 3))
    assert public == int((split_of == "public").sum())
    assert plan == plan_crops(meta, split_of, sets, crop_cfg)[1]
    assert all(c["skipped"] for c in plan.values())
    _, plan = count_plan(ctx.data_root, ["id", "caption", "objects"], plan_captions, sets, SplitPlan(FRACTIONS, 3))
    assert plan == plan_captions(meta, split_of, sets)


def test_tally_equals_totals_in_a_plain_loop(ray_local):
    """Per-batch group totals added up on the driver equal the same totals over all rows at once,
    whatever the blocks (uneven, some with a group missing)."""
    import pyarrow as pa

    from study.frame.tally import tally

    rng = np.random.default_rng(5)
    n = 997
    table = pa.table({"g": rng.choice(["a", "b", "c"], n), "h": rng.choice(["", "x"], n),
                      "v": rng.integers(0, 2**31, n), "w": rng.integers(-50, 50, n)})
    ds = ray_local.data.from_arrow(table).repartition(7)
    got = tally(ds, lambda t: t, ["g", "h"], sums=["v"], maxes=["w"])
    want: dict = {}
    for r in table.to_pylist():
        t = want.setdefault((r["g"], r["h"]), {"count": 0, "v": 0, "w": -(10**9)})
        t["count"] += 1
        t["v"] += r["v"]
        t["w"] = max(t["w"], r["w"])
    assert got == want
