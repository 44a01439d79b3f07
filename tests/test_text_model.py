"""The VLM one-model test as published, end to end: model A's text tower and a pretrained
sentence-transformers model (a real one, built here with small random weights and saved as users
save theirs) each search the public captions, and the one-model numbers come from what they
retrieved. Checked against searches and precisions recomputed in the test from the two models and
the records, not from the product's outcome files. The same study with both CLIP models imported
(the weights this run trained, saved as open_clip_train's DDP checkpoints) gives the same report."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.core.topk import brute_force_knn, l2_normalize
from study.data import records
from study.data.loading import read_split
from study.frame.context import RunContext
from study.kinds.vlm_dejavu.text_model import SPACE, TEXT_MODEL
from study.train.clip import encode_texts, load_clip, tokenize
from test_text_encoders import encoder_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
K = 10
OVERRIDES = [
    "name=vlm-text-model", "data.num_images=700",
    "splits.fractions={target: 0.3, reference: 0.1, holdout: 0.15, public: 0.45}",
    "train.epochs=20", "train.checkpoint_every=20", "search.k=20", "measure.ks=[1, 10]",
    "measure.bootstrap=100", "measure.permutations=100", "measure.utility_records=100",
]


def save_text_model(folder: str) -> None:
    """A sentence-transformers model of a one-layer BERT with random weights over a character
    vocabulary (any caption tokenizes), mean-pooled: what ``SentenceTransformer.save`` writes."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    base = encoder_folder(os.path.join(folder, "base"), layers=1, seed=0)
    bert = Transformer(base, max_seq_length=128)
    SentenceTransformer(modules=[bert, Pooling(32, "mean")], device="cpu").save(os.path.join(folder, "st"))


@pytest.fixture(scope="module")
def study_run(ray_local, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("text-model"))
    save_text_model(model_dir)
    out = str(tmp_path_factory.mktemp("runs"))
    overrides = OVERRIDES + [f"measure.text_model={os.path.join(model_dir, 'st')}"]
    args = ["run", CONFIG, "--output", out]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    ctx = RunContext.create(load_config(CONFIG, overrides, out))
    return ctx, storage.read_json(ctx.stage_dir("report", "report.json")), os.path.join(model_dir, "st")


def captions(ctx, split: str) -> tuple[list[str], list[str]]:
    ids = list(read_split(ctx.splits_dir, split)[0])
    table = records.read_records(ctx.data_root, ids, ["id", "caption"])
    by_id = dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))
    kept = [i for i in ids if records.has_text(by_id[i])]
    return kept, [by_id[i] for i in kept]


def persisted(ctx, model: str, split: str) -> dict[str, list[str]]:
    got = pq.read_table(ctx.search_results(model, split, SPACE))
    return dict(zip(got.column("query_id").to_pylist(), got.column("neighbor_ids").to_pylist()))


def check_search(ctx, model: str, embed) -> None:
    """Each target-split query's persisted neighbours are its nearest public captions: their
    distances, with both sides embedded here by ``embed`` (unit-normalised), equal those of a
    brute-force search, rank by rank (distances, not ids: captions that embed alike tie, and a
    small random model puts many captions close together)."""
    pub_ids, pub_text = captions(ctx, "public")
    row_of = {i: j for j, i in enumerate(pub_ids)}
    saved = persisted(ctx, model, "target")
    q_ids = list(saved)
    by_id = dict(zip(*captions(ctx, "target")))
    xq, xb = embed([by_id[q] for q in q_ids]), embed(pub_text)
    D, _ = brute_force_knn(xq, xb, 20)
    got = np.stack([((xb[[row_of[n] for n in saved[q]]] - xq[i]) ** 2).sum(1) for i, q in enumerate(q_ids)])
    assert got.shape == D.shape
    np.testing.assert_allclose(got, D, atol=2e-4)


def test_both_searches_equal_brute_force_over_the_public_captions(study_run):
    from sentence_transformers import SentenceTransformer

    ctx, report, folder = study_run
    st = SentenceTransformer(folder, device="cpu")
    check_search(ctx, TEXT_MODEL, lambda t: st.encode(t, normalize_embeddings=True).astype(np.float64))
    model, tokenizer, _ = load_clip(storage.read_bytes(ctx.model_file("model_a")))
    with torch.inference_mode():
        tower = lambda t: l2_normalize(encode_texts(model, tokenize(tokenizer, t)).double().numpy())  # noqa: E731
        check_search(ctx, "model_a", tower)
    assert report["embedded"]["sets"]["public_captions"]["embedded"] == len(captions(ctx, "public")[0])


def test_one_model_precision_from_the_retrieved_captions_images(study_run):
    """k = 10, union, all objects: each positive record's precision when its own model's text tower
    retrieves (model A on the target split, model B on the reference split) and when the text
    model does; PPG from them, from the persisted neighbours and the records' objects."""
    ctx, report, _ = study_run
    assert report["one_model"]["trained_on"] == {TEXT_MODEL: ["elsewhere"]}  # pretrained, none of the splits
    entry = report["one_model"]["predictors"][TEXT_MODEL][SPACE]["positive"][f"k={K}/union/all"]
    ids = [i for s in ("public", "target", "reference") for i in read_split(ctx.splits_dir, s)[0]]
    table = records.read_records(ctx.data_root, ids, ["id", "objects"])
    objects = dict(zip(table.column("id").to_pylist(), table.column("objects").to_pylist()))

    def precision(model, split):
        out = {}
        for q, ns in persisted(ctx, model, split).items():
            if objects[q]:
                pred = {o for n in ns[:K] for o in objects[n] or []}
                out[q] = len(pred & set(objects[q])) / len(pred) if pred else 0.0
        return out

    sides = [(precision(own, split), precision(TEXT_MODEL, split)) for own, split in (("model_a", "target"),
                                                                                       ("model_b", "reference"))]
    assert [sorted(t) == sorted(r) for t, r in sides] == [True, True] and entry["n"] == [len(t) for t, _ in sides]
    # Each statistic is the mean of the two sides' own.
    assert entry["precision"]["target"]["value"] == pytest.approx(np.mean([np.mean(list(t.values())) for t, _ in sides]))
    assert entry["precision"]["reference"]["value"] == pytest.approx(np.mean([np.mean(list(r.values())) for _, r in sides]))
    ppg = [np.mean([t[q] > r[q] for q in t]) - np.mean([t[q] < r[q] for q in t]) for t, r in sides]
    assert entry["ppg"]["value"] == pytest.approx(np.mean(ppg))
    page = storage.read_bytes(ctx.stage_dir("report", "report.html")).decode()
    assert "<b>text_model</b> (as published)" in page and f"{SPACE}/positive" in page


def test_a_folder_that_is_not_a_text_model_is_refused_in_one_line(study_run, tmp_path, capsys):
    from study.errors import DataError
    from study.kinds.vlm_dejavu.text_model import SentenceEmbedder

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(DataError, match=r"^measure.text_model: .* does not load as a sentence-transformers model"):
        SentenceEmbedder({TEXT_MODEL: str(tmp_path)}, 1)
    args = ["run", CONFIG, "--output", str(tmp_path / "out"), "--set", "measure.text_model=/nonexistent/model"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "measure.text_model: nothing at /nonexistent/model" in err and "Traceback" not in err


def _as_open_clip_train(model_file: str, path: str) -> None:
    """A model this product trained, saved as open_clip_train saves an epoch under DDP: the state
    dict with "module." keys, the epoch, the run's name and the optimiser's state."""
    blob = torch.load(model_file, map_location="cpu", weights_only=False)
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(params)
    params[0].grad = torch.ones(2)
    opt.step()
    torch.save({"epoch": 20, "name": "2026_12_07-model_dejavu-tiny-lr_0.001-b_64-j_1-p_amp",
                "state_dict": {f"module.{k}": v for k, v in blob["state_dict"].items()},
                "optimizer": opt.state_dict()}, path)


def test_both_models_imported_from_open_clip_train_give_the_same_report(study_run, tmp_path, capsys):
    """Model A and model B from open_clip_train checkpoints (their input scaling stated, as a user
    states the mean and std they trained with), the splits they trained on from per-split text
    files, the one-model test with the imported sentence-transformers reference: nothing trains,
    and every measured number equals the run that trained those weights."""
    import hashlib

    ctx, report, folder = study_run
    lists = tmp_path / "splits"  # the records each model saw, as one text file of ids per split
    lists.mkdir()
    for split in ("target", "reference", "public", "holdout"):
        (lists / f"{split}.txt").write_text("\n".join(read_split(ctx.splits_dir, split)[0]) + "\n")
    files = {}
    for model in ("model_a", "model_b"):
        files[model] = str(tmp_path / f"{model}-epoch_20.pt")
        _as_open_clip_train(ctx.model_file(model), files[model])
    overrides = OVERRIDES + [f"measure.text_model={folder}", f"train.checkpoint={files['model_a']}",
                             f"train.checkpoint_b={files['model_b']}", "model.image_mean=[0.5, 0.5, 0.5]",
                             "model.image_std=[0.25, 0.25, 0.25]", f"splits.assignments={lists}"]
    args = ["run", CONFIG, "--output", str(tmp_path / "runs")]
    for o in overrides:
        args += ["--set", o]
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "fitting" not in log
    for model, key in (("model_a", "train.checkpoint"), ("model_b", "train.checkpoint_b")):
        assert f"{model}: imported {files[model]} (open_clip_train; dejavu-tiny, saved as float32) from {key}" in log
    imported = RunContext.create(load_config(CONFIG, overrides, str(tmp_path / "runs")))
    again = storage.read_json(imported.stage_dir("report", "report.json"))
    for part in ("results", "one_model", "utility"):
        assert again[part] == report[part] and report[part]
    assert again["splits"]["counts"] == report["splits"]["counts"] and again["splits"]["assignments"]["uri"] == str(lists)
    for model in ("model_a", "model_b"):
        info = again["training"][model]
        assert info["fingerprint"] == hashlib.sha256(open(files[model], "rb").read()).hexdigest()
        assert info["format"] == "open_clip_train" and info["image_mean"] == [0.5] * 3
    page = storage.read_bytes(imported.stage_dir("report", "report.html")).decode()
    assert "Models and splits from elsewhere" in page and again["training"]["model_b"]["fingerprint"] in page
    from study.report.summary import summary_lines

    lines = "\n".join(summary_lines(again))
    assert f"model_b (reference): imported from {files['model_b']} (open_clip_train, sha256 " in lines
