"""The SSL statistics computed in Ray tasks from the per-record outcome files: the same results
whatever the number of tasks the draws are split over, and the same as the core functions applied
to the records in one process (population test at top-1 and top-5, the curve, the most memorized),
on seeded outcome files with records in no particular order and models whose files are ordered
differently; a one-model control with a predictor that scored fewer records uses the records both
have."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from study.config_load import load_config
from study.core.metrics import Side, accuracy_curve, dejavu_test, most_memorized
from study.errors import StudyError
from study.frame.context import RunContext
from study.frame.kinds import CONTROLS, side_mask
from study.kinds.ssl_dejavu import entries, measure
from study.kinds.ssl_dejavu.outcomes import outcome_table
from study.stages import measure_tasks
from study.stages.measure import ONE_MODEL_CONTROLS, PREDICTOR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSL = os.path.join(ROOT, "configs/tiny.yaml")
SPLITS = {"target": 67, "reference": 52, "holdout": 75}


def _records(rng, n: int) -> dict:
    """Per model: top-1, top-5 (never wrong where top-1 is right), a confidence with ties and the
    records' labels (the same for every model)."""
    out = {}
    label = rng.integers(0, 4, n)
    for model in ("model_a", "model_b", PREDICTOR):
        top1 = rng.random(n) < 0.5 + 0.1 * label * (model == "model_a")  # model A better on the higher labels
        out[model] = (top1, top1 | (rng.random(n) < 0.4), -rng.integers(0, 6, n) / 4.0, label)
    return out


def _write(uri: str, ids: np.ndarray, rec: tuple, order: np.ndarray, parts: int) -> None:
    os.makedirs(uri)
    for j, rows in enumerate(np.array_split(order, parts)):
        pq.write_table(outcome_table(ids[rows], *(a[rows] for a in rec)), os.path.join(uri, f"part-{j:05d}.parquet"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("outcomes")
    where, data = {}, {}
    for split, n in SPLITS.items():
        ids = np.array([f"{split[0]}{i:04d}" for i in rng.permutation(n)])
        data[split] = (ids, _records(rng, n))
        for model, parts in (("model_a", 3), ("model_b", 2)):  # each model's files in its own order
            uri = str(root / model / split)
            _write(uri, ids, data[split][1][model], rng.permutation(n), parts)
            where[(model, split)] = (uri, f"search/{model}/{split}")
        scored = rng.permutation(n)[: n - 9]  # the predictor scored fewer records (uncroppable ones)
        uri = str(root / PREDICTOR / split)
        _write(uri, ids, data[split][1][PREDICTOR], scored, 1)
        where[(PREDICTOR, split)] = (uri, None)
    return where, data


def _ctx(tmp_path) -> RunContext:
    cfg = load_config(SSL, ["measure.bootstrap=300", "measure.permutations=400", "report.gallery_size=6"],
                      str(tmp_path))
    return RunContext(cfg, str(tmp_path))


def _by_hand(data, where, ctx, controls: dict, control: str) -> dict:
    """The control's results from the core functions on the records both models have, in id order."""
    m, seed = ctx.cfg.measure, ctx.cfg.splits.seed
    by_metric, classes = {}, {}
    for j, metric in enumerate(("top1", "top5")):
        sides = []
        for side_name, split, tgt, ref in controls[control]:
            ids, rec = data[split]
            have = set(pq.read_table(where[(ref, split)][0]).column("id").to_pylist())
            order = [i for i in np.argsort(ids) if ids[i] in have]
            order = np.array(order)[side_mask(ids[order], control, side_name, seed)]
            sides.append(Side(ids[order], rec[tgt][j][order], rec[tgt][2][order], rec[ref][j][order], rec[ref][2][order]))
            for i in order if metric == "top1" else ():  # per class: each record's label, right or not for each
                c = classes.setdefault(int(rec[tgt][3][i]), [0, 0, 0])
                c[0], c[1], c[2] = c[0] + 1, c[1] + bool(rec[tgt][0][i]), c[2] + bool(rec[ref][0][i])
        by_metric[metric] = sides
    args = dict(qs=m.quantiles, bootstrap=m.bootstrap, permutations=m.permutations, level=m.confidence_level, seed=m.seed)
    return {"top1": dejavu_test(by_metric["top1"], **args), "top5": dejavu_test(by_metric["top5"], **args),
            "curve": accuracy_curve(by_metric["top1"], m.curve_points),
            "most_memorized": [r["id"] for r in most_memorized(by_metric["top1"], ctx.cfg.report.gallery_size)],
            "per_class": [{"label": c, "records": n, "target": t / n, "reference": r / n}
                          for c, (n, t, r) in sorted(classes.items())]}


@pytest.mark.parametrize("controls, one_sided", [(CONTROLS, False), (ONE_MODEL_CONTROLS, True)])
def test_results_do_not_depend_on_the_number_of_tasks_and_equal_the_core_functions(ray_local, outcomes, tmp_path,
                                                                                   monkeypatch, controls, one_sided):
    where, data = outcomes
    ctx = _ctx(tmp_path)
    got = []
    real = measure_tasks.draw_pieces
    for per_task in (10**6, 120, 37):  # one task for every draw; 4 and 11 pieces, more than this machine has CPUs
        monkeypatch.setattr(measure_tasks, "DRAWS_PER_TASK", per_task)
        monkeypatch.setattr(measure, "draw_pieces", lambda b, p, cpus: real(b, p, 10**6))
        got.append(measure.control_results(ctx, where, controls, "test", one_sided=one_sided))
    assert got[0] == got[1] == got[2]
    assert set(got[0]) == {"positive", "null"}
    for control, rows in controls.items():
        want = _by_hand(data, where, ctx, controls, control)
        assert got[0][control] == entries.local(where, rows, control, ctx.cfg.measure, ctx.cfg.splits.seed,
                                                ctx.cfg.report.gallery_size)
        for key in ("top1", "top5", "curve", "per_class"):
            assert got[0][control][key] == want[key], (control, key)
        assert [r["id"] for r in got[0][control]["most_memorized"]] == want["most_memorized"]
        assert all(r["split"] == rows[r["side"]][1] for r in got[0][control]["most_memorized"])
        # every record both have, once: the null control's halves of the holdout add up to it
        want_n = sum(SPLITS[s] - (9 if one_sided else 0) for s in {split for _, split, *_ in rows})
        assert sum(got[0][control]["top1"]["n"]) == want_n


def test_models_queried_with_different_records_stop_the_statistics(ray_local, outcomes, tmp_path):
    where, data = outcomes
    ids, rec = data["holdout"]
    uri = str(tmp_path / "short")
    _write(uri, ids, rec["model_b"], np.arange(len(ids) - 1), 1)  # model B's holdout misses a record
    bad = {**where, ("model_b", "holdout"): (uri, "search/model_b/holdout")}
    with pytest.raises(StudyError, match=r"search/model_a/holdout.*1 only in model_a's"):
        measure.control_results(_ctx(tmp_path), bad, {"null": CONTROLS["null"]}, "test")
