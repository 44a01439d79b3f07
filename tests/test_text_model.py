"""The VLM one-model test as published, end to end: model A's text tower and a pretrained
sentence-transformers model (a real one, built here with small random weights and saved as users
save theirs) each search the public captions, and the one-model numbers come from what they
retrieved. Checked against searches and precisions recomputed in the test from the two models and
the records, not from the product's outcome files."""
from __future__ import annotations

import os
import string

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
K = 10
OVERRIDES = [
    "name=vlm-text-model", "data.num_images=700", "train.pair=false",
    "splits.fractions={target: 0.3, reference: 0.1, holdout: 0.15, public: 0.45}",
    "train.epochs=20", "train.checkpoint_every=20", "search.k=20", "measure.ks=[1, 10]",
    "measure.bootstrap=100", "measure.permutations=100", "measure.utility_records=100",
]


def save_text_model(folder: str) -> None:
    """A sentence-transformers model of a one-layer BERT with random weights over a character
    vocabulary (any caption tokenizes), mean-pooled: what ``SentenceTransformer.save`` writes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    base = os.path.join(folder, "base")
    os.makedirs(base)
    chars = list(string.ascii_lowercase + string.digits)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    with open(os.path.join(base, "vocab.txt"), "w") as fh:
        fh.write("\n".join(words))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(base)
    BertTokenizerFast(vocab_file=os.path.join(base, "vocab.txt"), do_lower_case=True).save_pretrained(base)
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
    """k = 10, union, all objects: each positive record's precision when model A's text tower
    retrieves (target) and when the text model does (reference), from the persisted neighbours
    and the records' objects; PPG from them."""
    ctx, report, _ = study_run
    entry = report["one_model"]["predictors"][TEXT_MODEL][SPACE]["positive"][f"k={K}/union/all"]
    ids = list(read_split(ctx.splits_dir, "public")[0]) + list(read_split(ctx.splits_dir, "target")[0])
    table = records.read_records(ctx.data_root, ids, ["id", "objects"])
    objects = dict(zip(table.column("id").to_pylist(), table.column("objects").to_pylist()))

    def precision(model):
        out = {}
        for q, ns in persisted(ctx, model, "target").items():
            if objects[q]:
                pred = {o for n in ns[:K] for o in objects[n] or []}
                out[q] = len(pred & set(objects[q])) / len(pred) if pred else 0.0
        return out

    t, r = precision("model_a"), precision(TEXT_MODEL)
    assert sorted(t) == sorted(r) and entry["n"] == [len(t)]
    assert entry["precision"]["target"]["value"] == pytest.approx(np.mean(list(t.values())))
    assert entry["precision"]["reference"]["value"] == pytest.approx(np.mean(list(r.values())))
    ppg = np.mean([t[q] > r[q] for q in t]) - np.mean([t[q] < r[q] for q in t])
    assert entry["ppg"]["value"] == pytest.approx(ppg)
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
