"""An SSL study over training length, end to end on the tiny config: a sweep over train.snapshot
trains each model once (BYOL) and measures the model as it was after each chosen
epoch, with each model's linear probe beside the gaps and the one-model test (naive Bayes over
crop tags, and a crop classifier trained as the pair is) checked against predictions computed here."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.frame.context import RunContext
from study.stages.search import read_embeddings
from study.core.naive_bayes import TagCounts, predict
from study.data import records
from study.data.loading import read_split
from study.frame.runner import setting_contexts
from study.kinds.ssl_dejavu.taggers import synthetic_background
from study.embed.views import labelled_crops
from study.train.models import load_model, normalize
from study.data.model_input import ModelInput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/tiny.yaml")
OVERRIDES = ["name=snapshots", "train.method=byol", "train.epochs=2", "train.checkpoint_every=1",
             "sweep={train.snapshot: [2, 1]}", "measure.bootstrap=50", "measure.permutations=50",
             "measure.utility_records=60", "search.representations=[projector]",
             "train.crop_classifier=true"]


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs"))
    args = ["run", CONFIG, "--output", out]
    for o in OVERRIDES:
        args += ["--set", o]
    return args, RunContext.create(load_config(CONFIG, OVERRIDES, out))


def test_snapshot_sweep_trains_once_and_measures_each_epoch(swept, capsys):
    args, ctx = swept
    assert main(args) == 0
    log = capsys.readouterr().out
    assert len(re.findall(r"train +\[snapshot=2\] starting", log)) == 1
    assert len(re.findall(r"train +\[snapshot=1\] reusing finished stage", log)) == 1
    (first, a), (second, b) = setting_contexts(ctx)
    assert (first, second) == ("snapshot=2", "snapshot=1") and a.train_setting == b.train_setting == first
    assert b.model_file("model_a").endswith(os.path.join("settings", "snapshot=2", "train", "model_a", "snapshots",
                                                          "model-e1.pt"))
    assert storage.exists(b.model_file("model_a")) and storage.exists(a.model_file("model_a"))
    # Each setting embedded its own snapshot: the same records, different vectors.
    ids_a, emb_a = read_embeddings(a.stage_dir("embed", "model_a", "public", "projector"))
    ids_b, emb_b = read_embeddings(b.stage_dir("embed", "model_a", "public", "projector"))
    order_a, order_b = np.argsort(ids_a.astype(str)), np.argsort(ids_b.astype(str))
    assert list(ids_a[order_a]) == list(ids_b[order_b]) and not np.allclose(emb_a[order_a], emb_b[order_b])

    report = storage.read_json(ctx.report_json)
    sweep = report["sweep"]
    assert sweep["key"] == "train.snapshot" and [s["value"] for s in sweep["settings"]] == [2, 1]
    for s in sweep["settings"]:
        assert set(s["headline"]) == {"projector/positive", "projector/null"}
        probe = s["utility"]["linear_probe"]
        for rep in ("backbone", "projector"):
            for model in ("model_a", "model_b"):
                acc = probe[rep][model]
                assert acc["ci"][0] <= acc["value"] <= acc["ci"][1] and acc["n"] == s["utility"]["records"]["test"]
        assert s["training"]  # the shared training's summary, in both settings
    page = open(ctx.report_html).read()
    assert "Sweep over train.snapshot" in page and "Utility: linear probe" in page
    assert "One-model test (no reference model)" in page
    top = report["one_model"]["predictors"]["naive_bayes"]["projector"]["positive"]["most_memorized"]
    assert all(r["split"] in ("target", "reference") for r in top)
    if top:
        assert "Most memorized by the one-model test" in page and top[0]["id"] in page

    # Each setting carries its own one-model test: in `dejavu report`'s lines under the setting and in
    # the sweep table of the page.
    from study.report.summary import summary_lines

    text = "\n".join(summary_lines(report))
    later = text.split("train.snapshot = 1:")[1].split("(the first setting), in full")[0]
    v = sweep["settings"][1]["one_model"]["headline"]["naive_bayes"]["projector/positive"]
    gap = f"gap {v['gap']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]  p = {v['p_value']:.4f}"
    assert "one-model test, k-NN minus the naive_bayes predictor:" in later and gap in later
    assert "projector/positive, one-model vs naive_bayes" in page and gap.split("  p")[0][4:] in page

    # The one-model test: its predictor's accuracy is naive Bayes over the captions' background words,
    # learnt from the public records (computed here from the records directly).
    one = report["one_model"]
    assert one["tagger"] == "synthetic_background" and set(one["headline"]) == {"naive_bayes", "crop_classifier"}
    for head in one["headline"].values():
        assert set(head) == {"projector/positive", "projector/null"}
    table = TagCounts.empty(storage.read_json(ctx.manifest)["num_classes"])
    pub_ids, pub_labels = read_split(ctx.splits_dir, "public")
    table.add(_tags(a, pub_ids), pub_labels)
    accuracy = []
    for split in ("target", "reference"):
        ids, labels = read_split(ctx.splits_dir, split)
        accuracy.append(np.mean(predict(table, _tags(a, ids))[0] == labels))
    nb = one["headline"]["naive_bayes"]["projector/positive"]
    assert nb["reference"] == pytest.approx(np.mean(accuracy))
    # The published scores (measure.one_model_naive_bayes: published) on the same records, against
    # the reference code's rule written out here: product of count(t, c) / count(t), 1e-10 for an
    # unseen pair, a tag no public record had left out; ranked by the top class's score.
    import dataclasses

    from study.kinds.ssl_dejavu.one_model import naive_bayes_outcomes

    published = dataclasses.replace(a, cfg=dataclasses.replace(
        a.cfg, measure=dataclasses.replace(a.cfg.measure, one_model_naive_bayes="published")))
    ids, labels, scores, confidence = naive_bayes_outcomes(published, ["reference"], table.counts.shape[1])["reference"]
    per_tag = table.counts.sum(axis=1)
    for i, tags in zip(range(len(ids)), _tags(a, ids)):
        want = np.zeros(table.counts.shape[1])
        if tags:
            want[:] = 1.0
            for t in set(tags):
                if t in table.vocab:
                    row = table.counts[table.vocab[t]]
                    want *= np.array([(n if n > 0 else 1e-10) / per_tag[table.vocab[t]] for n in row])
        np.testing.assert_allclose(scores[i], want, rtol=1e-9)
        assert confidence[i] == pytest.approx(want.max())
    assert nb["target"] == pytest.approx(report["headline"]["projector/positive"]["target"])
    # The crop classifier, trained on the public set's crops, answers for the same records.
    cc = one["headline"]["crop_classifier"]["projector/positive"]
    model, meta = load_model(storage.read_bytes(a.stage_dir("train", "crop_classifier", "model.pt")))
    assert meta["method"] == "supervised" and meta["trained_on"] == ["public"]
    accuracy = []
    for split in ("target", "reference"):
        ids = [str(i) for i in read_split(ctx.splits_dir, split)[0]]
        table = records.read_records(a.data_root, ids, columns=["id", "image", "width", "height", "label", "boxes"])
        _, crops, labels = labelled_crops(table, a.cfg.embed.crop, ModelInput.of(a.cfg.data))
        with torch.inference_mode():
            _, logits = model(normalize(torch.from_numpy(crops)))
        accuracy.append(np.mean(logits.argmax(1).numpy() == labels))
    assert cc["target"] == pytest.approx(nb["target"]) and cc["reference"] == pytest.approx(np.mean(accuracy))
    assert report["training"]["crop_classifier"]["splits"] == ["public"]

    from study.report.runs import find_runs

    (run,) = find_runs(ctx.cfg.output)
    assert run.all_finished, run.stages  # the shared train stage counts as finished for both settings


def _tags(ctx, ids) -> list[list[str]]:
    table = records.read_records(ctx.data_root, [str(i) for i in ids], columns=["id", "caption"])
    caption = dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))
    return [synthetic_background(caption[str(i)]) for i in ids]


def test_a_model_trained_elsewhere_alone_gets_the_one_model_test(ray_local, tmp_path, capsys):
    """train.pair=false with train.checkpoint: model A is a backbone's state dict from elsewhere,
    nothing trains, and the report holds the one-model test alone (model A's side of each control),
    in the backbone space alone (no projector weights), and says why."""
    from study.config import ModelConfig
    from study.train.methods import method_params
    from study.train.models import build_encoder

    torch.manual_seed(0)
    backbone = build_encoder(ModelConfig(), "supervised", method_params("supervised", {}), 10).backbone
    uri = str(tmp_path / "elsewhere.pt")
    torch.save({"model": backbone.state_dict()}, uri)
    overrides = ["name=elsewhere", "train.pair=false", f"train.checkpoint={uri}",
                 "measure.bootstrap=50", "measure.permutations=50", "measure.utility_records=40"]
    args = ["run", CONFIG, "--output", str(tmp_path / "runs")]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert f"model_a: imported {uri} (state dict; projector weights: no)" in log and "fitting" not in log
    ctx = RunContext.create(load_config(CONFIG, overrides, str(tmp_path / "runs")))
    assert not os.path.exists(ctx.model_dir("model_b")) and not os.path.exists(ctx.stage_dir("embed", "model_b"))
    report = storage.read_json(ctx.report_json)
    assert report["headline"] == {}  # no reference model: no two-model test
    one = report["one_model"]["predictors"]["naive_bayes"]["backbone"]
    target = report["embedded"]["sets"]["target"]["embedded"]
    assert one["positive"]["top1"]["n"] == [target]  # model A's side only
    assert set(report["utility"]["linear_probe"]["backbone"]) == {"model_a"}
    assert set(report["one_model"]["predictors"]["naive_bayes"]) == set(report["utility"]["linear_probe"]) == {"backbone"}
    from study.report.summary import summary_lines

    text = "\n".join(summary_lines(report))  # what `dejavu report` prints
    assert "(no reference model: no two-model test)" in text
    assert "one-model test, k-NN minus the naive_bayes predictor:" in text and "backbone/positive" in text
    assert "The projector space was not measured: model_a came without projector weights" in text
