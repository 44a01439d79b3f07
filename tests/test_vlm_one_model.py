"""The VLM one-model test without Ray: its measurement on hand-made neighbour lists (numbers worked
out by hand), what the retriever's embed pass plans and keeps, and its config rules. The end-to-end
run (the retriever trained on the public set, its numbers in report.json) is in test_vlm_e2e.py."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.config import TrainConfig
from study.config_load import load_config
from study.core.object_sets import PREDICTION_RULES, ObjectSets, neighbour_votes, overlap, predict_union
from study.core.split_plan import SplitPlan
from study.data.model_input import ModelInput
from study.embed.captions import (CAPTION, PUBLIC_CAPTIONS, TEXT, plan_with_public_captions,
                                  prepare_vlm_batch)
from study.errors import ConfigError
from study.frame.kinds import get_kind
from study.kinds.vlm_dejavu.text_retriever import CONTROLS, RETRIEVER
from study.frame.validate import check_registries
from study.kinds.vlm_dejavu import entries
from study.stages.measure_tasks import sides_present
from study.kinds.vlm_dejavu.outcomes import VARIANTS, column

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VLM = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
SSL = os.path.join(ROOT, "configs/tiny.yaml")

# Objects a, b, c (columns); four public records. Their images' objects are what both the attacked
# model's retrieved images and the retriever's retrieved captions contribute.
A, B, C = range(3)
PUBLIC = ObjectSets.from_lists([[A],     # p0: a
                                [B],     # p1: b
                                [A, C],  # p2: a, c
                                [C]],    # p3: c
                               3)
KEY = (1, "union", "all")


def _scores(ids, gt, image_rows, caption_rows):
    """(target's, retriever's) per-record scores at k = 1 from their nearest public record."""
    gt = ObjectSets.from_lists([np.flatnonzero(row) for row in gt], 3)
    t = overlap(gt, predict_union(neighbour_votes(PUBLIC, np.array(image_rows)[:, None], 1)))
    r = overlap(gt, predict_union(neighbour_votes(PUBLIC, np.array(caption_rows)[:, None], 1)))
    ids = np.array(ids)
    return {KEY: (ids, t)}, {KEY: (ids, r)}


def _measured(scores, tmp_path):
    """The positive control's entries from these per-record scores, written as the scoring tasks
    write them (the outcome files) and measured in this process as the statistics tasks do."""
    overrides = ["measure.bootstrap=200", "measure.permutations=200", "report.gallery_size=5"]
    cfg = load_config(VLM, overrides, str(tmp_path))
    where = {}
    for (model, split), by_key in scores.items():
        ids, sc = by_key[KEY]
        uri = str(tmp_path / "outcomes" / model / split)
        os.makedirs(uri)
        cols = {"id": pa.array(list(ids)), "gt/all": pa.array(sc["gt_size"].astype(np.int32)),
                "gt/unnamed": pa.array(np.zeros(len(ids), np.int32))}  # no record in the unnamed variant
        for rule in PREDICTION_RULES:
            for variant in VARIANTS:
                cols[column(1, rule, variant, "hits")] = pa.array(sc["hits"].astype(np.int32))
                cols[column(1, rule, variant, "pred")] = pa.array(sc["pred_size"].astype(np.int32))
        pq.write_table(pa.table(cols), os.path.join(uri, "part-00000.parquet"))
        where[(model, split)] = (uri, f"search/{model}/{split}")
    have = sides_present(CONTROLS["positive"], where, one_sided=True)
    m = dataclasses.replace(cfg.measure, ks=(1,))
    return {"positive": entries.local(where, have, "positive", ["all"], m, cfg.splits.seed, cfg.report.gallery_size)}


# Side a: model A's training records (target split).
#   r1: gt {a, c}; A's image p2 {a, c}: P 1, R 1;  retriever's caption p0 {a}: P 1, R 0.5
#   r2: gt {b};    A's image p0 {a}:    P 0, R 0;  retriever's caption p1 {b}: P 1, R 1
#   r3: gt {c};    A's image p3 {c}:    P 1, R 1;  retriever's caption p3 {c}: P 1, R 1
# PPG = (0 - 1 + 0) / 3, PRG = (+1 - 1 + 0) / 3 = 0. A record's share of the AUC of "fraction with
# recall >= x" on 101 grid points is 1 for R = 1, 0.005 for R = 0 (the trapezoid to the first grid
# point), 0.505 for R = 0.5: AUCG = (1 + 0.005 + 1 - 0.505 - 1 - 1) / 3 = -1/6.
SIDE_A = dict(ids=["r1", "r2", "r3"], gt=[[1, 0, 1], [0, 1, 0], [0, 0, 1]], image_rows=[2, 0, 3], caption_rows=[0, 1, 3])
# Side b: model B's training records (reference split). r4: gt {b}; B's image p1 {b}: P 1, R 1;
# retriever's caption p2 {a, c}: P 0, R 0. PPG = PRG = +1, AUCG = 1 - 0.005 = 0.995.
SIDE_B = dict(ids=["r4"], gt=[[0, 1, 0]], image_rows=[1], caption_rows=[2])


def test_model_a_alone_against_the_retriever_matches_hand_worked_numbers(tmp_path):
    target, reference = _scores(**SIDE_A)
    out = _measured({("model_a", "target"): target, (RETRIEVER, "target"): reference}, tmp_path)
    e = out["positive"]["k=1/union/all"]
    assert e["n"] == [3]  # model A's side only: no model B
    assert e["ppg"]["value"] == pytest.approx(-1 / 3)
    assert e["prg"]["value"] == pytest.approx(0.0)
    assert e["aucg"]["value"] == pytest.approx(-1 / 6)
    assert e["precision"]["target"]["value"] == pytest.approx(2 / 3)
    assert e["precision"]["reference"]["value"] == pytest.approx(1.0)
    assert e["recall"]["reference"]["value"] == pytest.approx(2.5 / 3)
    for gap in ("ppg", "prg", "aucg"):
        lo, hi = e[gap]["ci"]  # a permutation p-value: (1 + as extreme) / (1 + 200)
        assert -1 <= lo <= hi <= 1 and e[gap]["permutations"] == 200
        assert 1 / 201 <= e[gap]["p_value"] <= 1 and round(e[gap]["p_value"] * 201, 6).is_integer()
    # Only r1 recovers more true objects with the target (2 hits) than with the retriever (1).
    assert [(r["id"], r["score"], r["reference_model"]) for r in e["most_memorized"]] == [("r1", 1.0, RETRIEVER)]


def test_with_the_pair_each_model_is_the_target_on_its_own_records(tmp_path):
    a_t, a_r = _scores(**SIDE_A)
    b_t, b_r = _scores(**SIDE_B)
    scores = {("model_a", "target"): a_t, (RETRIEVER, "target"): a_r,
              ("model_b", "reference"): b_t, (RETRIEVER, "reference"): b_r}
    e = _measured(scores, tmp_path)["positive"]["k=1/union/all"]
    assert e["n"] == [3, 1]
    assert e["ppg"]["value"] == pytest.approx((-1 / 3 + 1) / 2)  # the mean over sides
    assert e["prg"]["value"] == pytest.approx((0 + 1) / 2)
    assert e["aucg"]["value"] == pytest.approx((-1 / 6 + 0.995) / 2)
    assert {r["id"]: r["split"] for r in e["most_memorized"]} == {"r1": "target", "r4": "reference"}


def test_sides_follow_the_two_model_test_with_the_retriever_as_reference():
    from study.frame.kinds import CONTROLS as TWO_MODEL

    for control, rows in CONTROLS.items():
        assert [(s, split, t) for s, split, t, _ in rows] == [(s, split, t) for s, split, t, _ in TWO_MODEL[control]]
        assert {ref for *_, ref in rows} == {RETRIEVER}


def _batch(split: str) -> pa.Table:
    rows = {"public": [("p-obj", "a cat", ["cat"]), ("p-noobj", "a dog", []), ("p-blank", "  ", ["cat"])],
            "target": [("t-ok", "two cats", ["cat"]), ("t-noobj", "a fish", [])]}[split]
    ids, captions, objects = zip(*rows)
    return pa.table({"id": list(ids), "image": [b""] * len(ids), "caption": list(captions), "objects": list(objects)})


def test_public_captions_are_planned_and_embedded_alike_objects_or_not():
    """The retriever's database is every public record with a caption (as the image database is
    every public image); attacked captions still need objects to be tested."""
    modes = {"public": CAPTION, "target": TEXT}
    for split, kept, plan_key, planned in (
            ("public", ["p-obj", "p-noobj"], PUBLIC_CAPTIONS, {"embedded": 2, "skipped": {"empty_caption": 1}}),
            ("target", ["t-ok"], "target", {"embedded": 1, "skipped": {"no_objects": 1}})):
        batch, plan = _batch(split), SplitPlan({split: 1.0}, 0)  # every record in that split
        assert plan_with_public_captions(batch, plan.assign(batch), ("target", PUBLIC_CAPTIONS))[plan_key] == planned
        rows = prepare_vlm_batch(batch.drop_columns(["image"]), plan, modes, ModelInput(8))  # no image read
        assert list(rows["id"]) == kept and all(rows["caption"]) and not rows["pixels"].any()
        assert rows["pixels"].shape == (len(kept), 8, 8, 3)
    assert PUBLIC_CAPTIONS not in plan_with_public_captions(_batch("public"), np.array(["public"] * 3), ("target",))


def test_config_text_retriever_and_pair_false():
    assert TrainConfig().text_retriever is False and TrainConfig().pair is True
    cfg = load_config(VLM, ["train.text_retriever=true", "train.pair=false"])
    check_registries(cfg)  # model A and the one-model test alone
    assert list(get_kind(cfg.study).searches(cfg)) == [("model_a", "caption_to_image"), (RETRIEVER, "caption_to_caption")]
    with pytest.raises(ConfigError, match=r"^train\.pair: false .*train\.text_retriever: true"):
        check_registries(load_config(VLM, ["train.pair=false"]))
    with pytest.raises(ConfigError, match=r"^train\.crop_classifier: .*train\.text_retriever or measure\.text_model"):
        check_registries(load_config(VLM, ["train.text_retriever=true", "train.crop_classifier=true"]))
    with pytest.raises(ConfigError, match=r"^train\.checkpoint: model\.pt does not exist"):
        check_registries(load_config(VLM, ["train.text_retriever=true", "train.checkpoint=model.pt"]))
    with pytest.raises(ConfigError, match=r"^train\.text_retriever: the ssl_dejavu study has no text retriever"):
        check_registries(load_config(SSL, ["train.text_retriever=true"]))


def test_a_sweep_shows_each_settings_one_model_test():
    """`dejavu report` and the sweep table give every setting's one-model numbers, not the first's only."""
    from study.kinds.vlm_dejavu.summary import vlm_lines
    from study.kinds.vlm_dejavu.report_html import sweep_table

    def est(v: float) -> dict:
        return {"value": v, "ci": [v - 0.01, v + 0.01], "p_value": 0.001}

    def head(v: float) -> dict:
        return {"caption_to_image/positive/k=10": {"ppg": est(v), "prg": est(v), "aucg": est(v)}}

    settings = [{"name": f"p={p}", "value": p, "headline": head(0.1 + p), "utility": {"zero_shot": 0.5},
                 "one_model": {"headline": {RETRIEVER: head(0.3 + p)}}} for p in (0.0, 0.5)]
    report = {"headline_key": "k=10/top_n/unnamed", "ks": [10], "metric": "l2_normalized", "headline": settings[0]["headline"],
              "sweep": {"key": "train.text_randomization.p", "settings": settings}}
    text = "\n".join(vlm_lines(report))
    later = text.split("train.text_randomization.p = 0.5:")[1]
    assert f"one-model test, the target against the {RETRIEVER}" in later and "PPG +0.800 [+0.790, +0.810]" in later
    assert text.count(f"against the {RETRIEVER}") == 2
    page = sweep_table(report["sweep"])
    assert page.count(f"one-model vs {RETRIEVER}") == 2 and "0.800 [0.790, 0.810]" in page


def test_the_retriever_trains_beside_the_pair_only_where_all_three_fit():
    from study.stages.train import room_for

    one = TrainConfig(num_workers=1, cpus_per_worker=1.0)
    assert room_for({"CPU": 3.0}, one, False, 3) and not room_for({"CPU": 2.0}, one, False, 3)
    half = TrainConfig(num_workers=2, cpus_per_worker=0.5)
    assert room_for({"CPU": 3.0}, half, False, 3) and not room_for({"CPU": 2.9}, half, False, 3)
    assert not room_for({"CPU": 8.0, "GPU": 2.0}, one, True, 3) and room_for({"CPU": 8.0, "GPU": 3.0}, one, True, 3)
