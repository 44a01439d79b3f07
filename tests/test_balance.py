"""Per-class quotas: the threshold rule equals the greedy choice it stands for (pure), and the
splits stage writes exactly n records of every class per split, equal to an in-memory oracle."""
from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest

from study import storage
from study.config_load import load_config
from study.core.balance import UNASSIGNED, assign_balanced, class_thresholds
from study.core.split_plan import QUARANTINED
from study.core.splits import hash_unit
from study.data import records
from study.data.loading import read_split
from study.errors import ConfigError
from study.frame.context import RunContext
from study.stages.splits import run_splits


def greedy(u, labels, eligible, quotas):
    """The definition: per class, splits in order take the n smallest-u usable untaken records."""
    out = np.full(len(u), UNASSIGNED, dtype=object)
    for c in set(labels):
        members = sorted((i for i in range(len(u)) if labels[i] == c), key=lambda i: u[i])
        for split, n in quotas.items():
            free = [i for i in members if eligible[split][i] and out[i] == UNASSIGNED]
            for i in free[:n]:
                out[i] = split
    return out


@pytest.mark.parametrize("seed", range(5))
def test_thresholds_reproduce_the_greedy_choice(seed):
    rng = np.random.default_rng(seed)
    n = 300
    u = rng.random(n)
    labels = list(rng.integers(0, 4, n))
    quotas = {"target": 12, "reference": 12, "public": 30, "holdout": 40}  # holdout falls short in some classes
    boxes = rng.random(n) < 0.7  # attacked splits need boxes; the public set does not
    eligible = {"target": boxes, "reference": boxes, "public": np.ones(n, bool), "holdout": boxes}
    thresholds = {}
    for c in set(labels):
        idx = np.array([i for i in range(n) if labels[i] == c])
        thresholds[c], _ = class_thresholds(u[idx], {s: e[idx] for s, e in eligible.items()}, quotas)
    got = assign_balanced(u, labels, eligible, thresholds, list(quotas))
    np.testing.assert_array_equal(got, greedy(u, labels, eligible, quotas))
    counts = collections.Counter(zip(labels, got))
    for c in set(labels):
        assert counts[(c, "target")] == counts[(c, "reference")] == 12


def test_taken_counts_report_a_short_class():
    u = np.array([0.1, 0.5, 0.3])
    th, taken = class_thresholds(u, {"target": np.ones(3, bool), "public": np.ones(3, bool)}, {"target": 2, "public": 2})
    assert taken == {"target": 2, "public": 1}
    assert th["target"] == 0.3 and th["public"] == float("inf")


def test_config_checks():
    with pytest.raises(ConfigError, match="splits.per_class.reference"):
        load_config(None, ["splits.per_class={target: 5, public: 5}"])
    with pytest.raises(ConfigError, match="splits.per_class"):
        load_config(None, ["splits.per_class={target: 5, reference: 5, public: 5, test: 1}"])
    cfg = load_config(None, ["splits.per_class={public: 9, target: 5, reference: 5}"]).splits
    assert list(cfg.per_class) == ["target", "reference", "public"]
    assert cfg.uses("target") and not cfg.uses("holdout")


def test_stage_takes_n_per_class_and_reports_shortfalls(ray_local, tmp_path):
    sets = ["data.num_images=400", "data.image_size=16", "data.num_classes=4", "data.shard_size=100",
            "splits.per_class={target: 20, reference: 20, public: 40, holdout: 30}", f"output={tmp_path}"]
    ctx = RunContext.create(load_config(None, sets))
    from study.stages.data import run_data

    run_data(ctx)
    # Plant records without boxes: the attacked splits cannot take them, the public set can.
    table = records.dataset(ctx.data_root).to_table()
    no_boxes = set(table.column("id").to_pylist()[::5])
    boxes = [None if i in no_boxes else b for i, b in zip(table.column("id").to_pylist(), table.column("boxes").to_pylist())]
    table = table.set_column(table.schema.get_field_index("boxes"), "boxes", pa.array(boxes, records.RECORD_SCHEMA.field("boxes").type))
    storage.remove(ctx.data_root)
    records.write_shard(storage.join(ctx.data_root, "part-00000.parquet"), table.to_pydict())
    manifest = run_splits(ctx)

    ids, labels = table.column("id").to_pylist(), table.column("label").to_pylist()
    quotas = dict(ctx.cfg.splits.per_class)
    has = np.array([i not in no_boxes for i in ids])
    eligible = {"target": has, "reference": has, "public": np.ones(len(ids), bool), "holdout": has}
    want = greedy(hash_unit(ids, ctx.cfg.splits.seed), labels, eligible, quotas)
    for split in quotas:
        got = sorted(read_split(ctx.splits_dir, split)[0])
        assert got == sorted(i for i, s in zip(ids, want) if s == split), split
    per = collections.Counter((lab, s) for lab, s in zip(labels, want))
    for c in range(4):
        assert per[(c, "target")] == per[(c, "reference")] == 20 and per[(c, "public")] == 40
    short = {c: n for c, n in manifest["per_class"]["short"]["holdout"].items()}
    assert short == {str(c): per[(c, "holdout")] for c in range(4) if per[(c, "holdout")] < 30}
    assert short  # 100 records a class, 80 with boxes: 40 to the pair, 30 asked of the rest
    assert manifest["counts"] == {s: sum(per[(c, s)] for c in range(4)) for s in quotas}
    # Every later stage applies the same rule: the plan read back from the manifest agrees.
    plan = ctx.split_plan()
    got = plan.assign(table)
    np.testing.assert_array_equal(np.where(got == QUARANTINED, UNASSIGNED, got), want)
