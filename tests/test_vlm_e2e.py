"""The VLM study end to end on a reduced config, on the local Ray instance.

The records are the synthetic generator's, written as Parquet with a few made unusable (no
objects, an empty caption), so one run checks the parquet path, skip counting, the report's
structure, counts that add up, the positive control's direction, streamed embeddings against an
in-memory forward pass, persisted search against brute force, `dejavu report`, and reuse. The
same run trains the one-model test's text retriever on the public set and measures the one-model
test beside the two-model test.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from study import storage
from study.cli import main
from study.config import DataConfig
from study.config_load import load_config
from study.core.splits import assign_splits
from study.core.topk import brute_force_knn
from study.data import records, synthetic
from study.data.loading import load_images, read_split
from study.frame.context import RunContext
from study.stages.search import read_embeddings
from study.kinds.vlm_dejavu.text_retriever import RETRIEVER, SPACE
from study.train.clip import encode_images, encode_texts, load_clip, tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
N = 1100
NO_OBJECTS = range(0, N, 37)  # ids whose objects are dropped
NO_CAPTION = range(5, N, 41)  # ids whose caption is blanked
OVERRIDES = [
    "name=vlm-e2e",
    "data.source=parquet",
    "splits.fractions={target: 0.22, reference: 0.22, holdout: 0.12, public: 0.44}",
    "train.epochs=40",
    "train.checkpoint_every=20",
    "search.k=20",
    "measure.ks=[1, 10]",
    "measure.bootstrap=300",
    "measure.permutations=300",
    "measure.utility_records=200",
    "measure.zero_shot_prompt=the digit {}",
    "train.text_retriever=true",
    "train.cpus_per_worker=0.5",  # room for the retriever's trainer beside the pair's on 2 CPUs
]


def write_records(root: str) -> None:
    """The quickstart's synthetic records, with some made unusable."""
    base = load_config(CONFIG, [], root).data
    cfg = DataConfig(**{**vars(base), "source": "synthetic", "path": None, "num_images": N, "shard_size": 400})
    for shard, rows in synthetic.iter_shards(cfg):
        start = shard * cfg.shard_size
        for j in range(len(rows["id"])):
            if start + j in NO_OBJECTS:
                rows["objects"][j] = []
            elif start + j in NO_CAPTION:
                rows["caption"][j] = "  "
        records.write_shard(os.path.join(root, f"part-{shard:05d}.parquet"), rows)


@pytest.fixture(scope="module")
def study_run(ray_local, tmp_path_factory):
    data = str(tmp_path_factory.mktemp("records"))
    write_records(data)
    out = str(tmp_path_factory.mktemp("runs"))
    overrides = OVERRIDES + [f"data.path={data}"]
    args = ["run", CONFIG, "--output", out]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    cfg = load_config(CONFIG, overrides, out)
    ctx = RunContext.create(cfg)
    return args, ctx, storage.read_json(ctx.report_json)


def test_report_structure(study_run):
    _, ctx, report = study_run
    assert report["study"] == "vlm_dejavu" and report["k"] == 10 and report["ks"] == [1, 10]
    spaces = report["results"]["spaces"]
    assert list(spaces) == ["caption_to_image"]
    for control in ("positive", "null"):
        entries = spaces["caption_to_image"][control]
        assert set(entries) == {f"k={k}/{r}/{v}" for k in (1, 10) for r in ("union", "top_n") for v in ("all", "unnamed")}
        for e in entries.values():
            for gap in ("ppg", "prg", "aucg"):
                _assert_estimate(e[gap])
            assert [s["fraction"] for s in e["sample_level"]] == [0.001, 0.01, 0.1, 1.0]
            assert len(e["curve"]["x"]) == len(e["curve"]["target"]) == len(e["curve"]["reference"])
            assert len(e["most_memorized"]) <= ctx.cfg.report.gallery_size
    for key in ("caption_to_image/positive/k=10", "caption_to_image/null/k=10"):
        assert set(report["headline"][key]) >= {"ppg", "prg", "aucg"}
    utility = report["utility"]
    holdout = report["embedded"]["sets"]["holdout"]
    captioned = holdout["embedded"] + holdout["skipped"].get("no_objects", 0)  # utility needs captions only
    assert utility["records"] == min(captioned, 200)
    for model in ("model_a", "model_b"):
        entry = utility["per_model"][model]
        assert set(entry) == {"zero_shot", "i2t_recall@1", "i2t_recall@5"}
        assert 0 <= entry["i2t_recall@1"] <= entry["i2t_recall@5"] <= 1 and 0 <= entry["zero_shot"] <= 1
    assert utility["zero_shot_prompt"] == "the digit {}" and 0.2 < utility["zero_shot_chance"] < 0.4  # 2-4 of 10
    page = open(ctx.report_html, encoding="utf-8").read()
    for key, v in report["headline"].items():  # every headline number, as the page writes an estimate
        cells = [f"{g.upper()} {_written(v[g])}" for g in ("ppg", "prg", "aucg")]
        assert f"<li><b>{key}</b> ({v['variant']} objects): {'; '.join(cells)}</li>" in page, key
    assert page.count("<h2>") >= 4 and page.count("<img src=\"data:image/png;base64,") >= 1


def _assert_estimate(est: dict) -> None:
    """An interval inside [-1, 1] and a permutation p-value: (1 + as extreme) / (1 + 300)."""
    assert -1 <= est["ci"][0] <= est["ci"][1] <= 1 and -1 <= est["value"] <= 1
    assert est["permutations"] == 300
    assert 1 / 301 <= est["p_value"] <= 1 and round(est["p_value"] * 301, 6).is_integer()


def _written(est: dict) -> str:
    """An estimate as the page writes it (a p-value at the floor 1/301 as a bound)."""
    p = "p &lt; 0.01 (300 permutations)" if est["p_value"] == 1 / 301 else f"p = {est['p_value']:.4f}"
    return f"{est['value']:.3f} [{est['ci'][0]:.3f}, {est['ci'][1]:.3f}], {p}"


def test_counts_add_up(study_run):
    """Blank captions in the attacked sets are quarantined by the split plan (those sets need a
    caption to query with and to train on); empty object sets are skipped by the embed plan."""
    _, ctx, report = study_run
    counts = report["splits"]["counts"]
    ids = [f"syn-0-{i:08d}" for i in range(N)]
    split_of = dict(zip(ids, assign_splits(ids, ctx.cfg.splits.fractions, ctx.cfg.splits.seed)))
    blank = {i for i in ids if int(i[-8:]) in NO_CAPTION and int(i[-8:]) not in NO_OBJECTS
             and split_of[i] in ("target", "reference", "holdout")}
    assert report["splits"]["quarantined"] == {"missing_caption": len(blank)}
    assert report["quarantine"]["quarantined"] == {"missing_caption": len(blank)}
    assert sum(counts.values()) + report["splits"]["unassigned"] + len(blank) == N == report["quarantine"]["records_read"]
    sets = report["embedded"]["sets"]
    for split in ("target", "reference", "holdout"):
        members = [i for i in ids if split_of[i] == split and i not in blank]
        expect_no_obj = sum(int(i[-8:]) in NO_OBJECTS for i in members)
        assert sets[split]["skipped"] == ({"no_objects": expect_no_obj} if expect_no_obj else {})
        assert sets[split]["embedded"] + sum(sets[split]["skipped"].values()) == counts[split] == len(members)
    for model in ("model_a", "model_b"):
        pub, _ = read_embeddings(ctx.embeddings(model, "public", "image"))
        assert len(pub) == counts["public"]
    # No pair without a caption reached training.
    assert report["training"]["model_a"].get("skipped", {}).get("empty_caption", 0) == 0
    pos = report["results"]["spaces"]["caption_to_image"]["positive"]["k=10/union/all"]
    assert pos["n"] == [sets["target"]["embedded"], sets["reference"]["embedded"]]
    null = report["results"]["spaces"]["caption_to_image"]["null"]["k=10/union/all"]
    assert sum(null["n"]) == sets["holdout"]["embedded"]


def _union_precision(ctx, model: str, split: str, k: int = 10) -> dict[str, float]:
    """Per query record: the share of the objects of its caption's k nearest public images (their
    union) that the record's own image holds, from the persisted neighbours and the records."""
    got = pq.read_table(ctx.search_results(model, split, "caption_to_image"))
    q_ids, nbrs = got.column("query_id").to_pylist(), [n[:k] for n in got.column("neighbor_ids").to_pylist()]
    table = records.read_records(ctx.data_root, q_ids + [n for ns in nbrs for n in ns], columns=["id", "objects"])
    objects = dict(zip(table.column("id").to_pylist(), table.column("objects").to_pylist()))
    out = {}
    for q, ns in zip(q_ids, nbrs):
        pred = {o for n in ns for o in objects[n] or []}
        out[q] = len(pred & set(objects[q])) / len(pred) if pred else 0.0
    return out


def test_positive_control_direction(study_run):
    """Precisions recomputed from the neighbour files: model A's own training records (target)
    queried in model A (target's side) and in model B (reference's side), and model B's own
    (reference) the other way round; each number is the mean over the two sides."""
    _, ctx, report = study_run
    entry = report["results"]["spaces"]["caption_to_image"]["positive"]["k=10/union/all"]
    sides = [("target", "model_a", "model_b"), ("reference", "model_b", "model_a")]
    as_target = [np.mean(list(_union_precision(ctx, own, split).values())) for split, own, _ in sides]
    as_reference = [np.mean(list(_union_precision(ctx, other, split).values())) for split, _, other in sides]
    assert entry["precision"]["target"]["value"] == pytest.approx(np.mean(as_target))
    assert entry["precision"]["reference"]["value"] == pytest.approx(np.mean(as_reference))
    assert np.mean(as_target) > np.mean(as_reference)  # each model retrieves better for its own records
    headline = report["results"]["spaces"]["caption_to_image"]["positive"]["k=10/top_n/unnamed"]
    assert headline["ppg"]["value"] > 0 and headline["ppg"]["ci"][0] > 0, headline["ppg"]


def test_null_control_shows_no_gap(study_run):
    """Neither model saw the holdout; each half plays target for one model and reference for the
    other, so only record sampling is left: the null's intervals cover 0, its tests do not reject."""
    _, _, report = study_run
    null = report["headline"]["caption_to_image/null/k=10"]
    for gap in ("ppg", "prg"):
        assert null[gap]["ci"][0] <= 0 <= null[gap]["ci"][1], (gap, null[gap])
        assert null[gap]["p_value"] > 0.01, (gap, null[gap])


def test_streamed_embeddings_equal_in_memory_forward(study_run):
    _, ctx, _ = study_run
    model, tok, _ = load_clip(storage.read_bytes(ctx.model_file("model_a")))
    ids, emb = read_embeddings(ctx.embeddings("model_a", "public", "image"))
    pick = list(ids[:48])
    images = load_images(ctx.data_root, pick)
    x = torch.from_numpy(np.stack([images[i] for i in pick])).permute(0, 3, 1, 2).contiguous()
    np.testing.assert_allclose(emb[:48], encode_images(model, x).numpy(), rtol=1e-4, atol=1e-5)
    q_ids, q_emb = read_embeddings(ctx.embeddings("model_a", "target", "text"))
    table = records.read_records(ctx.data_root, list(q_ids[:48]), columns=["id", "caption"])
    caption = dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))
    expect = encode_texts(model, tokenize(tok, [caption[i] for i in q_ids[:48]])).numpy()
    np.testing.assert_allclose(q_emb[:48], expect, rtol=1e-4, atol=1e-5)


def test_persisted_search_equals_brute_force(study_run):
    _, ctx, _ = study_run
    pub_ids, xb = read_embeddings(ctx.embeddings("model_b", "public", "image"))
    q_ids, xq = read_embeddings(ctx.embeddings("model_b", "reference", "text"))
    table = pq.read_table(ctx.search_results("model_b", "reference", "caption_to_image"))
    assert table.column("query_id").to_pylist() == list(q_ids)
    got = table.column("neighbor_ids").to_pylist()
    _assert_exact_knn(got, pub_ids, xb, xq)
    public = set(read_split(ctx.splits_dir, "public")[0])
    assert all(n in public for row in got for n in row)


def _assert_exact_knn(got: list[list[str]], pub_ids, xb: np.ndarray, xq: np.ndarray, k: int = 20) -> None:
    """Each query's neighbours are an exact k-NN: distinct public records whose distances are the k
    smallest, in order (brute force). Ids are compared through distances, since identical captions
    embed identically and their order among equals is not defined."""
    D, _ = brute_force_knn(xq, xb, k)
    row_of = {i: r for r, i in enumerate(pub_ids)}
    assert all(len(g) == len(set(g)) == k for g in got)
    for q, g in enumerate(got):
        d = ((np.asarray(xb, np.float64)[[row_of[i] for i in g]] - np.asarray(xq[q], np.float64)) ** 2).sum(1)
        np.testing.assert_allclose(d, D[q], atol=1e-4)


def _split_of(ctx) -> dict[str, str]:
    ids = [f"syn-0-{i:08d}" for i in range(N)]
    return dict(zip(ids, assign_splits(ids, ctx.cfg.splits.fractions, ctx.cfg.splits.seed)))


def test_text_retriever_trains_and_retrieves_on_the_public_set_only(study_run):
    """Its training set is the public split (less the pairs without a caption), its database every
    public caption (objects or not), its queries the attacked captions the pair's are."""
    _, ctx, report = study_run
    public = {i for i, s in _split_of(ctx).items() if s == "public"}
    blank = {i for i in public if int(i[-8:]) in NO_CAPTION and int(i[-8:]) not in NO_OBJECTS}
    assert blank and any(int(i[-8:]) in NO_OBJECTS for i in public)  # the data exercise both rules
    training = report["training"][RETRIEVER]
    assert training["splits"] == ["public"] and training["skipped"] == {"empty_caption": len(blank)}
    assert training["trained_with"] == ["model_a", "model_b"]  # beside the pair: the cluster holds all three
    model, tok, meta = load_clip(storage.read_bytes(ctx.model_file(RETRIEVER)))
    assert meta["trained_on"] == ["public"]
    assert report["embedded"]["sets"]["public_captions"] == {"embedded": len(public - blank),
                                                             "skipped": {"empty_caption": len(blank)}}
    pub_ids, xb = read_embeddings(ctx.embeddings(RETRIEVER, "public", "text"))
    assert set(pub_ids) == public - blank and not os.path.exists(ctx.embeddings(RETRIEVER, "public", "image"))
    # In record order, whichever replica or write task finished first: identical captions embed
    # identically, and the search breaks such ties by a row's place, so a rerun retrieves the same.
    in_order = [i for i in records.dataset(ctx.data_root).to_table(columns=["id"]).column("id").to_pylist()
                if i in public and i not in blank]
    assert list(pub_ids) == in_order
    table = records.read_records(ctx.data_root, list(pub_ids[:32]), columns=["id", "caption"])
    caption = dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))
    expect = encode_texts(model, tokenize(tok, [caption[i] for i in pub_ids[:32]])).numpy()
    np.testing.assert_allclose(xb[:32], expect, rtol=1e-4, atol=1e-5)
    q_ids, xq = read_embeddings(ctx.embeddings(RETRIEVER, "target", "text"))
    assert sorted(q_ids) == sorted(read_embeddings(ctx.embeddings("model_a", "target", "text"))[0])
    got = pq.read_table(ctx.search_results(RETRIEVER, "target", SPACE))
    assert got.column("query_id").to_pylist() == list(q_ids)
    _assert_exact_knn(got.column("neighbor_ids").to_pylist(), pub_ids, xb, xq)


def test_one_model_numbers_beside_the_two_model_numbers(study_run, capsys):
    _, ctx, report = study_run
    one = report["one_model"]
    two = report["results"]["spaces"]["caption_to_image"]
    entries = one["predictors"][RETRIEVER]["caption_to_image"]
    assert set(entries) == {"positive", "null"} and one["public_captions"] == report["embedded"]["sets"]["public_captions"]
    for control, by_key in entries.items():
        assert set(by_key) == set(two[control])
        for key, e in by_key.items():
            assert e["n"] == two[control][key]["n"]  # the same records on the same sides
            # The target is the same model on the same records in both tests.
            assert e["precision"]["target"]["value"] == pytest.approx(two[control][key]["precision"]["target"]["value"])
            for gap in ("ppg", "prg", "aucg"):
                _assert_estimate(e[gap])
    # The retriever's precision, from its persisted neighbours and the records' objects: each side
    # (model A's records, model B's) scores the union of its 10 nearest public captions' objects.
    per_side = []
    for split in ("target", "reference"):
        got = pq.read_table(ctx.search_results(RETRIEVER, split, SPACE))
        q_ids, nbrs = got.column("query_id").to_pylist(), [n[:10] for n in got.column("neighbor_ids").to_pylist()]
        table = records.read_records(ctx.data_root, q_ids + [n for ns in nbrs for n in ns], columns=["id", "objects"])
        objects = dict(zip(table.column("id").to_pylist(), table.column("objects").to_pylist()))
        precision = []
        for q, ns in zip(q_ids, nbrs):
            pred = {o for n in ns for o in objects[n] or []}
            precision.append(len(pred & set(objects[q])) / len(pred) if pred else 0.0)
        per_side.append(np.mean(precision))
    e = entries["positive"]["k=10/union/all"]
    assert e["precision"]["reference"]["value"] == pytest.approx(np.mean(per_side))
    assert set(one["headline"][RETRIEVER]) == set(report["headline"])
    page = open(ctx.report_html, encoding="utf-8").read()
    assert "One-model test (no reference model)" in page and "precision: target / model B / one-model reference" in page
    assert "<b>text_retriever</b>: the text tower of a CLIP model trained on the public set only" in page
    assert "<b>text_model</b>" not in page  # no pretrained text model given
    capsys.readouterr()
    assert main(["report", ctx.run_dir]) == 0
    out = capsys.readouterr().out
    head = one["headline"][RETRIEVER]["caption_to_image/positive/k=10"]["ppg"]
    assert f"one-model test, the target against the {RETRIEVER}" in out
    assert out.split("one-model test")[1].count(f"PPG {head['value']:+.3f} [{head['ci'][0]:+.3f}") == 1


def test_report_command_prints_vlm_headline(study_run, capsys):
    _, ctx, report = study_run
    capsys.readouterr()
    assert main(["report", ctx.run_dir]) == 0
    out = capsys.readouterr().out
    assert "(vlm_dejavu)" in out and "caption_to_image/positive/k=10" in out
    ppg = report["headline"]["caption_to_image/positive/k=10"]["ppg"]
    assert f"PPG {ppg['value']:+.3f}" in out and "zero_shot" in out


def test_rerun_reuses_every_stage(study_run, capsys):
    args, _, _ = study_run
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    for stage in ("data", "splits", "train", "embed", "search", "measure", "report"):
        assert f"{stage:<8} reusing finished stage" in out


def test_sweep_runs_each_setting_and_reuses_finished_ones(ray_local, tmp_path, capsys):
    """A text-randomization sweep: one split plan, a model pair per setting, one report; adding a
    setting to a named run (``run_id``) trains only that setting (a one-setting sweep, extended). (Training on two workers, where
    open_clip's loss gathers features across them, is tested in tests/test_train_stream.py.)"""
    base = ["name=vlm-sweep", "run_id=sweep", "data.num_images=300", "train.epochs=2", "train.warmup_epochs=0", "train.checkpoint_every=2",
            "train.num_workers=1", "train.cpus_per_worker=0.5", "search.k=10",
            "measure.ks=[1, 10]", "measure.bootstrap=50", "measure.permutations=50", "measure.utility_records=50"]

    def run(values: str) -> dict:
        args = ["run", CONFIG, "--output", str(tmp_path)]
        for o in base + [f"sweep={{train.text_randomization.p: {values}}}"]:
            args += ["--set", o]
        assert main(args) == 0
        cfg = load_config(CONFIG, base + [f"sweep={{train.text_randomization.p: {values}}}"], str(tmp_path))
        return RunContext.create(cfg), storage.read_json(RunContext.create(cfg).report_json)

    ctx, report = run("[0.0]")
    assert [s["value"] for s in report["sweep"]["settings"]] == [0.0]
    capsys.readouterr()
    ctx, report = run("[0.0, 0.5]")
    out = capsys.readouterr().out
    assert len(re.findall(r"train +\[p=0\.0\] reusing finished stage", out)) == 1
    assert len(re.findall(r"train +\[p=0\.5\] starting", out)) == 1
    assert "splits   reusing finished stage" in out
    sweep = report["sweep"]
    assert sweep["key"] == "train.text_randomization.p" and [s["value"] for s in sweep["settings"]] == [0.0, 0.5]
    for s in sweep["settings"]:
        assert set(s["headline"]) == {"caption_to_image/positive/k=10", "caption_to_image/null/k=10"}
        assert "zero_shot" in s["utility"]
        model = storage.read_bytes(storage.join(ctx.run_dir, "settings", s["name"], "train", "model_a", "model.pt"))
        assert load_clip(model)[2]["text_randomization"]["p"] == s["value"]
