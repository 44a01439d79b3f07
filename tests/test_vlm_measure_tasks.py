"""The VLM statistics computed in Ray tasks from the per-record outcome files: the same entries
whatever the number of tasks the draws are split over, and the same as the core functions applied
to the records in one process (population test, sample level, most memorized), on seeded outcome
files with records in no particular order and models whose files are ordered differently."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.config_load import load_config
from study.core.object_sets import PREDICTION_RULES
from study.core.object_draws import population_test
from study.core.objects import ObjectSide, most_memorized
from study.core.sample_level import SampleLevel, sample_level
from study.errors import StudyError
from study.frame.context import RunContext
from study.frame.kinds import CONTROLS, side_mask
from study.kinds.vlm_dejavu import entries, measure
from study.stages import measure_tasks
from study.stages.outcome_files import WHOLE, id_blocks
from study.kinds.vlm_dejavu.outcomes import VARIANTS, column

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VLM = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
KS = (1, 5)
SPLITS = {"target": 57, "reference": 43, "holdout": 61}
RECORDS = sum(SPLITS.values())  # a model's attacked records: the bound of the sample level's histograms


def _records(rng, n: int) -> dict:
    """Per-record ground-truth sizes and, per model and (k, rule, variant), hits and |pred|."""
    gt = {"all": rng.integers(1, 5, n), "unnamed": rng.integers(0, 4, n)}  # 0: no unnamed object
    out = {"gt": gt}
    for model in ("model_a", "model_b"):
        out[(model, "nearest")] = rng.choice(np.linspace(0.1, 1.9, 23), n).astype(np.float32)  # ties, as a ranking meets them
        for k in KS:
            for rule in PREDICTION_RULES:
                for v in VARIANTS:
                    pred = rng.integers(0, 6, n)
                    out[(model, k, rule, v)] = (np.minimum(rng.integers(0, 4, n), np.minimum(pred, gt[v])), pred)
    return out


def _write(uri: str, ids: np.ndarray, rec: dict, model: str, order: np.ndarray, parts: int) -> None:
    os.makedirs(uri)
    for j, rows in enumerate(np.array_split(order, parts)):
        cols = {"id": pa.array(ids[rows]), **{f"gt/{v}": pa.array(rec["gt"][v][rows].astype(np.int32)) for v in VARIANTS},
                "nearest": pa.array(rec[(model, "nearest")][rows])}
        for k in KS:
            for rule in PREDICTION_RULES:
                for v in VARIANTS:
                    hits, pred = rec[(model, k, rule, v)]
                    cols[column(k, rule, v, "hits")] = pa.array(hits[rows].astype(np.int32))
                    cols[column(k, rule, v, "pred")] = pa.array(pred[rows].astype(np.int32))
        pq.write_table(pa.table(cols), os.path.join(uri, f"part-{j:05d}.parquet"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("outcomes")
    where, data = {}, {}
    for split, n in SPLITS.items():
        ids = np.array([f"{split[0]}{i:04d}" for i in rng.permutation(n)])
        data[split] = (ids, _records(rng, n))
        for model, parts in (("model_a", 3), ("model_b", 2)):  # each model's files in its own order
            uri = str(root / model / split)
            _write(uri, ids, data[split][1], model, rng.permutation(n), parts)
            where[(model, split)] = (uri, f"search/{model}/{split}")
    return where, data


def _ctx(tmp_path, **measure_fields) -> RunContext:
    cfg = load_config(VLM, ["measure.bootstrap=300", "measure.permutations=400", "report.gallery_size=7"], str(tmp_path))
    cfg = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure, ks=KS, **measure_fields))
    return RunContext(cfg, str(tmp_path))


def _by_hand(data, ctx, control: str, variant: str, k: int, rule: str) -> dict:
    """The entry from the core functions on the records in id order, sides as the controls say."""
    m, seed = ctx.cfg.measure, ctx.cfg.splits.seed
    sides = []
    for side_name, split, tgt, ref in CONTROLS[control]:
        ids, rec = data[split]
        order = np.argsort(ids)
        order = order[rec["gt"][variant][order] > 0]
        order = order[side_mask(ids[order], control, side_name, seed)]
        gt = rec["gt"][variant][order].astype(float)

        def scores(model):
            hits, pred = (a[order].astype(float) for a in rec[(model, k, rule, variant)])
            return np.divide(hits, pred, out=np.zeros(len(hits)), where=pred > 0), hits / gt, hits

        (tp, tr, th), (rp, rr, rh) = scores(tgt), scores(ref)
        sides.append(ObjectSide(ids[order], tp, tr, th, rp, rr, rh, rec[(tgt, "nearest")][order]))
    return {**population_test(sides, m.bootstrap, m.permutations, m.confidence_level, m.seed),
            "sample_level": sample_level(sides, entries.sample_plan(m)),
            "most_memorized": [r["id"] for r in most_memorized(sides, ctx.cfg.report.gallery_size)]}


def test_entries_do_not_depend_on_the_number_of_tasks_and_equal_the_core_functions(ray_local, outcomes, tmp_path,
                                                                                   monkeypatch):
    where, data = outcomes
    ctx = _ctx(tmp_path)
    got = []
    for per_task in (10**6, 120, 37):  # one task for every draw; 4 and 11 pieces, more than this machine has CPUs
        monkeypatch.setattr(measure_tasks, "DRAWS_PER_TASK", per_task)
        monkeypatch.setattr(measure, "draw_pieces", _pieces_ignoring_cpus(per_task))
        got.append(measure.control_results(ctx, where, CONTROLS, "test", [WHOLE], RECORDS))
    assert got[0] == got[1] == got[2]
    assert set(got[0]) == {"positive", "null"}
    for control in CONTROLS:
        assert got[0][control] == entries.local(where, CONTROLS[control], control, VARIANTS, ctx.cfg.measure,
                                                ctx.cfg.splits.seed, ctx.cfg.report.gallery_size)
        for variant in VARIANTS:
            for k in KS:
                for rule in PREDICTION_RULES:
                    entry = got[0][control][f"k={k}/{rule}/{variant}"]
                    want = _by_hand(data, ctx, control, variant, k, rule)
                    for key in ("n", "ppg", "prg", "aucg", "precision", "recall", "auc", "curve", "sample_level"):
                        assert entry[key] == want[key], (control, variant, k, rule, key)
                    assert [r["id"] for r in entry["most_memorized"]] == want["most_memorized"]


def _pieces_ignoring_cpus(per_task: int):
    real = measure_tasks.draw_pieces

    def pieces(bootstrap: int, permutations: int, cpus: int):
        return real(bootstrap, permutations, 10**6)  # more pieces than this machine's CPUs

    return pieces


def test_draw_pieces_cover_every_draw_once():
    for b, p, cpus in ((300, 400, 2), (1000, 2000, 16), (10, 7, 4), (1, 1, 8), (5000, 100, 3)):
        pieces = measure_tasks.draw_pieces(b, p, cpus)
        assert 1 <= len(pieces) <= cpus
        assert [d for r, _ in pieces for d in r] == list(range(b))
        assert [d for _, r in pieces for d in r] == list(range(p))
        assert len(pieces) == 1 or min(max(len(r), len(s)) for r, s in pieces) >= measure_tasks.DRAWS_PER_TASK // 2


def test_models_queried_with_different_records_stop_the_statistics(ray_local, outcomes, tmp_path):
    where, data = outcomes
    ids, rec = data["holdout"]
    uri = str(tmp_path / "short")
    _write(uri, ids, rec, "model_b", np.arange(len(ids) - 1), 1)  # model B's holdout misses a record
    bad = {**where, ("model_b", "holdout"): (uri, "search/model_b/holdout")}
    with pytest.raises(StudyError, match=r"search/model_a/holdout.*1 only in model_a's"):
        measure.control_results(_ctx(tmp_path), bad, {"null": CONTROLS["null"]}, "test", [WHOLE], RECORDS)


def _close(a, b, path=""):
    """Equal, floats to 1e-12 (sums of the same values in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for j, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{j}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), path
    else:
        assert a == b, path


def test_entries_from_id_ranges_equal_those_of_one_range(ray_local, outcomes, tmp_path, monkeypatch):
    """Records split into three id ranges, one task each (and draws in pieces): every number as
    from one range, to the rounding of sums in another order; the sample-level cuts (a
    distributed top-k) take their ties at the threshold across ranges by id."""
    where, data = outcomes
    ctx = _ctx(tmp_path)
    uris = [where[("model_a", split)][0] for split in SPLITS]
    blocks = id_blocks(uris, 3)
    assert len(blocks) == 3 and blocks[0][0] is None and blocks[-1][1] is None
    assert all(lo < hi for lo, hi in blocks[1:-1]) and [b[1] for b in blocks[:-1]] == [b[0] for b in blocks[1:]]
    every = sorted(i for split in SPLITS for i in data[split][0])
    sizes = [sum(1 for i in every if (lo is None or i >= lo) and (hi is None or i < hi)) for lo, hi in blocks]
    assert sum(sizes) == len(every) and max(sizes) - min(sizes) <= len(every) // 6  # about equal parts

    whole = measure.control_results(ctx, where, CONTROLS, "test", [WHOLE], RECORDS)
    monkeypatch.setattr(measure_tasks, "DRAWS_PER_TASK", 120)
    monkeypatch.setattr(measure, "draw_pieces", _pieces_ignoring_cpus(120))
    _close(measure.control_results(ctx, where, CONTROLS, "test", blocks, RECORDS), whole)
    _close(entries.local(where, CONTROLS["positive"], "positive", VARIANTS, ctx.cfg.measure, ctx.cfg.splits.seed,
                         ctx.cfg.report.gallery_size, blocks), whole["positive"])

    # Some cut's ties at its threshold span two ranges: the ranges' shares of the cut are tested.
    rows = CONTROLS["positive"]
    sample = SampleLevel((0.3, 0.5, 0.7))
    summed = [entries.summaries(where, rows, "positive", "all", KS, ctx.cfg.splits.seed, sample, b, 7) for b in blocks]
    plans = entries.plan(summed, sample)
    split_ties = [(key, j) for key in summed[0] for j in range(3)
                  if sum(0 < plans[b][key]["takes"]["max_pred_gap"][j][1] for b in range(3)) > 1]
    assert split_ties


def test_a_study_over_records_per_task_is_split_into_id_ranges(ray_local, outcomes, tmp_path):
    where, data = outcomes
    ctx = _ctx(tmp_path, records_per_task=60)
    uris = [where[("model_a", split)][0] for split in SPLITS]
    n = sum(SPLITS.values())
    blocks = measure_tasks.blocks_for(ctx, uris, n)
    assert len(blocks) == -(-n // 60)
    assert measure_tasks.blocks_for(_ctx(tmp_path), uris, n) == [WHOLE]


def test_the_published_sample_level_from_id_ranges_equals_the_core_functions(ray_local, outcomes, tmp_path):
    """The published sample level (the target side alone; max_pred_gap, crct_pred and min_dist;
    int(f n); F from mean precision and recall) in three id ranges, each block's histogram of
    nearest distances cut to the records that can make a cut: the rows of the core functions on
    every record at once."""
    where, data = outcomes
    ctx = _ctx(tmp_path, sample_rankings=("max_pred_gap", "crct_pred", "min_dist"), sample_sides="target",
               sample_f="from_means", top_q_size="floor", top_fractions=(0.02, 0.05, 0.1, 1.0))
    blocks = id_blocks([where[("model_a", split)][0] for split in SPLITS], 3)
    got = measure.control_results(ctx, where, {"positive": CONTROLS["positive"]}, "test", blocks, RECORDS)
    for variant in VARIANTS:
        for k in KS:
            for rule in PREDICTION_RULES:
                rows = got["positive"][f"k={k}/{rule}/{variant}"]["sample_level"]
                want = _by_hand(data, ctx, "positive", variant, k, rule)["sample_level"]
                assert [r["ranking"] for r in rows] == ["max_pred_gap"] * 4 + ["crct_pred"] * 4 + ["min_dist"] * 4
                _close(rows, want)
                n = int((data["target"][1]["gt"][variant] > 0).sum())  # side a: model A's split, with ground truth
                assert [r["n"] for r in rows[:4]] == [max(1, int(f * n)) for f in (0.02, 0.05, 0.1)] + [n]
    sample = entries.sample_plan(ctx.cfg.measure)
    summed = entries.summaries(where, CONTROLS["positive"], "positive", "all", KS, ctx.cfg.splits.seed, sample,
                               blocks[-1], 7, sample.limit(RECORDS))  # the range of the ids "t..."
    kept = sum(summed[(1, "union")]["counts"]["min_dist"].values())
    assert sample.limit(RECORDS) <= kept < summed[(1, "union")]["ranked"]  # the histogram was cut, the numbers hold
