"""The whole study end to end on a reduced config, on the local Ray instance.

One run serves every assertion: report structure, counts that add up, the positive control's
direction and the null control's absence of a gap, streamed embeddings vs an in-memory forward
pass, persisted search vs brute force, and reuse/resumption of finished stages. (That the same
config and seed reproduce a run is checked on a pair of tiny runs: test_reproduce.)
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.core.topk import brute_force_knn, l2_normalize
from study.data.loading import load_images, read_split
from study.frame.context import RunContext
from study.stages.search import read_embeddings
from study.train.models import load_model, normalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Quickstart recipe, shrunk: ~100 records per attacked split, 500 public; 5 classes with larger
# glyphs so that models this small still learn the classes from the public images' point of view.
OVERRIDES = [
    "name=e2e",
    "data.num_images=800",
    "data.num_classes=5",
    "data.object_scale=[0.35, 0.45]",
    "data.shard_size=300",
    "splits.fractions={target: 0.125, reference: 0.125, holdout: 0.125, public: 0.625}",
    "train.epochs=300",
    "train.global_batch_size=50",
    "train.checkpoint_every=100",
    "search.k=20",
    "measure.bootstrap=300",
    "measure.permutations=300",
]


@pytest.fixture(scope="module")
def study_run(ray_local, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs"))
    args = ["run", os.path.join(ROOT, "configs/quickstart.yaml"), "--output", out]
    for o in OVERRIDES:
        args += ["--set", o]
    assert main(args) == 0
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), OVERRIDES, out)
    ctx = RunContext.create(cfg)
    report = storage.read_json(ctx.stage_dir("report", "report.json"))
    return args, ctx, report


def test_report_structure(study_run):
    _, ctx, report = study_run
    for key in ("headline", "results", "splits", "embedded", "k", "crop_rule", "config", "versions", "stage_seconds"):
        assert key in report
    assert report["config"]["name"] == "e2e" and report["k"] == 20
    assert sorted(report["search_indexes"]) == [f"{m}/{r}" for m in ("model_a", "model_b") for r in ("backbone", "projector")]
    assert "faiss" in report["versions"]
    for rep in ("projector", "backbone"):
        for control in ("positive", "null"):
            res = report["results"][rep][control]
            for metric in ("top1", "top5"):
                by_q = res[metric]["by_q"]
                assert [e["q"] for e in by_q] == [0.05, 0.2, 1.0]
                for e in by_q:
                    lo, hi = e["gap"]["ci"]
                    assert -1 <= lo <= hi <= 1
                    # A permutation p-value: (1 + as extreme) / (1 + permutations), never below the floor.
                    assert e["gap"]["permutations"] == 300
                    assert 1 / 301 <= e["gap"]["p_value"] <= 1 and round(e["gap"]["p_value"] * 301, 6).is_integer()
            assert set(res["top1"]["quadrants"]) == {"memorized", "correlated", "forgotten", "misclassified"}
            assert len(res["curve"]["q"]) == len(res["curve"]["target"])


def test_page_shows_every_headline_number_and_section(study_run):
    _, ctx, report = study_run
    page = storage.read_bytes(ctx.stage_dir("report", "report.html")).decode()
    for section in ("Data", "Accuracy vs confidence fraction", "Quadrants", "Most-memorized records",
                    "Utility: linear probe", "All numbers"):
        assert f"<h2>{section}</h2>" in page, section
    for key, v in report["headline"].items():
        p = v["p_value"]
        written = ("p &lt; 0.01 (300 permutations)" if p == 1 / 301 else f"p = {p:.4f}")
        assert (f"<b>{key}</b>: gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], {written} "
                f"(target {v['target']:.3f}, reference {v['reference']:.3f})") in page, key
    for split, n in report["splits"]["counts"].items():
        assert f"{split} {n}" in page
    assert page.count("<img src=\"data:image/png;base64,") >= 2  # the curve and quadrant plots


def test_counts_add_up(study_run):
    _, ctx, report = study_run
    counts = report["splits"]["counts"]
    assert sum(counts.values()) + report["splits"]["unassigned"] == 800
    sets = report["embedded"]["sets"]
    for split in ("target", "reference", "holdout"):
        assert sets[split]["embedded"] + sum(sets[split]["skipped"].values()) == counts[split]
    for model in ("model_a", "model_b"):
        ids, _ = read_embeddings(ctx.stage_dir("embed", model, "public", "projector"))
        assert len(ids) == counts["public"]
    positive = report["results"]["projector"]["positive"]["top1"]
    assert positive["n"] == [sets["target"]["embedded"], sets["reference"]["embedded"]]
    null = report["results"]["projector"]["null"]["top1"]
    assert sum(null["n"]) == sets["holdout"]["embedded"]


def test_positive_control_direction(study_run):
    _, _, report = study_run
    head = report["headline"]["projector/positive"]
    assert head["gap"] > 0 and head["ci"][0] > 0, head
    assert head["target"] > head["reference"]


def test_null_control_shows_no_gap(study_run):
    _, _, report = study_run
    for rep in ("projector", "backbone"):
        null, positive = report["headline"][f"{rep}/null"], report["headline"][f"{rep}/positive"]
        # Neither model saw the holdout; each half plays target for one model and reference for the
        # other, so a model's better or worse accuracy overall cancels between the halves and only
        # record sampling is left, which the per-record bootstrap and the paired test measure.
        assert null["ci"][0] <= 0 <= null["ci"][1], (rep, null)
        assert null["p_value"] > 0.01, (rep, null)
        # ... and whatever it shows lies below what memorization of the training records shows.
        assert null["ci"][1] < positive["gap"] and null["gap"] < positive["ci"][0], (rep, null, positive)


def test_streamed_embeddings_equal_in_memory_forward(study_run):
    _, ctx, _ = study_run
    encoder, _ = load_model(storage.read_bytes(ctx.stage_dir("train", "model_a", "model.pt")))
    ids, emb = read_embeddings(ctx.stage_dir("embed", "model_a", "public", "backbone"))
    pick = list(ids[:64])
    images = load_images(ctx.data_root, pick)
    x = torch.from_numpy(np.stack([images[i] for i in pick])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        h, _ = encoder(normalize(x))
    np.testing.assert_allclose(emb[:64], h.numpy(), rtol=1e-4, atol=1e-5)


def test_persisted_search_equals_brute_force(study_run):
    _, ctx, _ = study_run
    import pyarrow.parquet as pq

    pub_ids, xb = read_embeddings(ctx.stage_dir("embed", "model_b", "public", "projector"))
    q_ids, xq = read_embeddings(ctx.stage_dir("embed", "model_b", "target", "projector"))
    _, I = brute_force_knn(l2_normalize(xq), l2_normalize(xb), 20)
    table = pq.read_table(ctx.stage_dir("search", "model_b", "target", "projector", "part-00000.parquet"))
    assert table.column("query_id").to_pylist() == list(q_ids)
    got = table.column("neighbor_ids").to_pylist()
    agree = np.mean([g == list(pub_ids[row]) for g, row in zip(got, I)])
    assert agree > 0.99  # float32 vs float64 may swap exact near-ties only
    labels = dict(zip(*read_split(ctx.splits_dir, "public")))
    assert all(n in labels for row in got for n in row)


def test_rerun_reuses_and_resumes(study_run, capsys):
    args, ctx, report = study_run
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    for stage in ("data", "splits", "train", "embed", "search", "measure", "report"):
        assert f"{stage:<8} reusing finished stage" in out
    # An interrupted run: model B's export and the later stages' markers are lost.
    model_b = ctx.stage_dir("train", "model_b")
    before = torch.load(os.path.join(model_b, "model.pt"), weights_only=False)["state_dict"]
    history = storage.read_bytes(os.path.join(model_b, "metrics.jsonl"))
    for path in (os.path.join(model_b, "model.pt"), os.path.join(model_b, "_COMPLETE.json"),
                 *(ctx.stage_dir(stage, "_COMPLETE.json") for stage in ("train", "search", "measure", "report"))):
        os.remove(path)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model_a: reusing finished model" in out
    assert "splits   reusing finished stage" in out
    # Model B resumes from its last checkpoint, the final epoch's, and trains no epoch: a retrain
    # would log its checkpoint epochs, and its per-epoch history (wall-clock seconds included)
    # would differ from the one the checkpoint carries.
    assert "[train model_b] resuming after epoch 300/300" in out
    assert "[train model_b] epoch " not in out
    assert storage.read_bytes(os.path.join(model_b, "metrics.jsonl")) == history
    after = torch.load(os.path.join(model_b, "model.pt"), weights_only=False)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The later stages ran again, and the rewritten report holds the same numbers.
    for stage in ("train", "search", "measure", "report"):
        assert f"{stage:<8} starting" in out, stage
    again = storage.read_json(ctx.report_json)
    assert again["created"] != report["created"]  # rewritten, not the first run's file
    for key in ("results", "headline", "one_model", "utility"):
        assert json.dumps(again[key], sort_keys=True) == json.dumps(report[key], sort_keys=True), key


def test_parquet_source_plans_the_same_splits(study_run, tmp_path):
    from study.stages.splits import run_splits
    from study.stages.data import run_data
    from study.frame.runner import _inputs

    _, ctx, report = study_run
    overrides = OVERRIDES + ["data.source=parquet", f"data.path={ctx.data_root}"]
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), overrides, str(tmp_path))
    other = RunContext.create(cfg)
    data = run_data(other)
    assert (data["records"], data["quarantined"]) == (800, {})
    assert other.data_root == ctx.data_root  # sound shards are read in place, not copied
    manifest = run_splits(other)
    assert manifest["digest"] == report["splits"]["digest"]
    before = _inputs(cfg)
    with open(os.path.join(ctx.data_root, "part-00000.parquet"), "ab") as fh:
        fh.write(b"\0")  # a rewritten input file must change the data stage's hash
    assert _inputs(cfg) != before


def test_per_class_accuracy_from_the_persisted_neighbours(study_run):
    """The per-class breakdown: each class's top-1 accuracy for the target and the reference,
    recomputed from the search results and the splits' labels (a majority vote of the neighbours'
    labels, ties to the smaller label)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, ctx, report = study_run
    labels = {split: dict(zip(*read_split(ctx.splits_dir, split))) for split in ("public", "target", "reference")}

    def right(model, split):
        where = ctx.stage_dir("search", model, split, "projector")
        table = pa.concat_tables([pq.read_table(os.path.join(where, f)) for f in sorted(os.listdir(where))
                                  if f.startswith("part-") and f.endswith(".parquet")])
        out = {}
        for q, row in zip(table.column("query_id").to_pylist(), table.column("neighbor_ids").to_pylist()):
            votes = np.bincount([labels["public"][n] for n in row], minlength=5)
            out[q] = int(np.argmax(votes)) == labels[split][q]
        return out

    per = {}  # label -> [records, target right, reference right]
    for split, tgt, ref in (("target", "model_a", "model_b"), ("reference", "model_b", "model_a")):
        t, r = right(tgt, split), right(ref, split)
        for q in t:
            c = per.setdefault(labels[split][q], [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + t[q], c[2] + r[q]
    got = report["results"]["projector"]["positive"]["per_class"]
    assert [c["label"] for c in got] == sorted(per)
    for c in got:
        n, t, r = per[c["label"]]
        assert (c["records"], c["target"], c["reference"]) == (n, pytest.approx(t / n), pytest.approx(r / n))
    page = storage.read_bytes(ctx.stage_dir("report", "report.html")).decode()
    assert "<h2>Per class (positive control, top-1 accuracy)</h2>" in page
    assert f"<td>{got[0]['target']:.3f}</td><td>{got[0]['reference']:.3f}</td>" in page
