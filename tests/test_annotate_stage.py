"""The annotate stage through Ray Data: two detector replicas over record shards of photographs
of several sizes, shards of different lengths finishing in any order. What it writes equals the
model run directly on the same images (in the same batches: a detector pads a batch to its
largest image) with the thresholds applied by hand (tests/test_annotators.py's oracle); the
records carry the annotator's objects; its agreement with the input's own objects is counted by
hand; a stage stopped half-way resumes with the shards it had not finished. The open-vocabulary
detector (transformers) and the open_clip tagger go through the same pool and equal their models
run directly too."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from test_annotators import ARCH, WORDS, _by_hand, _detector

from study import storage
from study.annotate.vocabulary import parse
from study.config_load import load_config
from study.data import records
from study.data.photos import photo
from study.frame.context import RunContext
from study.frame.runner import _run_stage, stages

SHARDS = [[(200, 130), (96, 160), (150, 150), (120, 90), (64, 64)], [(160, 100)], [(90, 140), (130, 130), (100, 70)]]
GIVEN = [["bike", "dog"], None, ["unicorn"], ["bottle", "scissors", "tv"], [], None, ["rucksack"], ["bicycle"], None]
BATCH = 2


def _png(i: int, size) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo(i)).convert("RGB").resize(size).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    from study import console

    console.configure()  # the stages' lines on stdout, whichever test ran before
    root = tmp_path_factory.mktemp("annotate")
    i = 0
    for s, sizes in enumerate(SHARDS):
        rows = {c: [] for c in records.RECORD_SCHEMA.names}
        for size in sizes:
            for c, v in zip(records.RECORD_SCHEMA.names, (f"r{i}", _png(i, size), size[0], size[1], 7, [], None, GIVEN[i])):
                rows[c].append(v)
            i += 1
        records.write_shard(str(root / "records" / f"part-{s}.parquet"), rows)
    model = _detector(3)
    torch.save(model.state_dict(), root / "detector.pt")
    (root / "words.txt").write_text(WORDS)
    cfg = load_config(None, ["data.source=parquet", f"data.path={root / 'records'}", "annotate.annotator=torchvision",
                             f"annotate.weights={root / 'detector.pt'}", f"annotate.architecture={ARCH}",
                             "annotate.image_size=160", f"annotate.vocabulary={root / 'words.txt'}",
                             f"annotate.batch_size={BATCH}", "annotate.replicas=2", "annotate.cpus_per_replica=0.5"],
                      str(root / "runs"))
    return cfg, model


def _run(ctx) -> dict:
    digests, timings = {}, {}
    for stage in stages()[:2]:
        _run_stage(ctx, stage, digests, timings)
    return storage.read_json(ctx.stage_dir("annotate", "_COMPLETE.json"))


def _oracle(model) -> list[list[tuple]]:
    """Per record (in id order), its kept (score, object, box): the model on each shard's batches."""
    vocabulary, th = parse(WORDS, "oracle"), load_config(None, []).annotate
    from study.annotate.detections import Thresholds

    kept = []
    for sizes, first in zip(SHARDS, np.cumsum([0] + [len(s) for s in SHARDS])):
        images = [Image.open(io.BytesIO(_png(first + j, size))).convert("RGB") for j, size in enumerate(sizes)]
        for b in range(0, len(images), BATCH):
            kept += _by_hand(model, images[b:b + BATCH], vocabulary, Thresholds(th.score, th.nms_iou, th.max_per_image))
    return kept


def test_the_stage_writes_what_the_model_and_the_thresholds_give(setup, capsys):
    cfg, model = setup
    ctx = RunContext.create(cfg)
    summary = _run(ctx)["summary"]
    out = capsys.readouterr().out
    assert "annotating 3 of 3 record shards with torchvision" in out
    names = parse(WORDS, "test").names
    want = _oracle(model)
    assert sum(len(w) for w in want) >= 3 and len({k[1] for w in want for k in w}) >= 2  # a case with content
    side = pq.read_table(ctx.annotations).sort_by("key")
    annotated = records.dataset(ctx.data_root).to_table().sort_by("id")
    assert ctx.data_root == ctx.annotated_root and annotated.num_rows == len(GIVEN)
    order = sorted(range(len(GIVEN)), key=lambda i: f"r{i}")
    for row, rec, i in zip(side.to_pylist(), annotated.to_pylist(), order):
        kept = want[i]
        assert row["key"] == rec["id"] == f"r{i}"
        assert row["objects"] == sorted({names[k[1]] for k in kept}) == rec["objects"]
        np.testing.assert_allclose(row["scores"], [k[0] for k in kept], atol=1e-4)
        got = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in row["boxes"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, np.array([k[2] for k in kept]).reshape(-1, 4), atol=1e-2)
        assert [b["label"] for b in row["boxes"]] == [k[1] for k in kept] == [b["label"] for b in rec["boxes"]]
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in got]
        assert rec["label"] == (kept[int(np.argmax(areas))][1] if kept else None)  # the largest box's object
        assert rec["image"] == _png(i, [s for sh in SHARDS for s in sh][i])  # the image itself unchanged
    # Counts, and the agreement with the input's own objects worked out here.
    assert summary["images"] == len(GIVEN) and summary["shards"] == 3
    from study.annotate.annotators import TorchvisionDetector
    from study.annotate.detections import Thresholds

    a = cfg.annotate
    assert summary["fingerprint"] == TorchvisionDetector(a.weights, parse(WORDS, "t"), Thresholds(), ARCH, 160).fingerprint
    assert summary["with_objects"] == sum(bool(w) for w in want)
    tp = fp = fn = 0
    for i, given in enumerate(GIVEN):
        if given is None:
            continue
        theirs = {names[parse(WORDS, "t").canonical(g)] for g in given if parse(WORDS, "t").canonical(g) is not None}
        found = {names[k[1]] for k in want[i]}
        tp, fp, fn = tp + len(found & theirs), fp + len(found - theirs), fn + len(theirs - found)
    quality = summary["quality"]
    assert (quality["images"], quality["tp"], quality["fp"], quality["fn"]) == (6, tp, fp, fn)
    assert quality["outside_vocabulary"] == {"dog": 1, "tv": 1}
    assert quality["per_object"]["unicorn"]["recall"] == 0.0  # no detector knows unicorns


def test_a_stopped_stage_resumes_with_the_shards_it_had_not_finished(setup, capsys):
    cfg, _ = setup
    ctx = RunContext.create(cfg)
    _run(ctx)
    before = pq.read_table(ctx.annotations).sort_by("key")
    counts = sorted(storage.list_files(ctx.stage_dir("annotate", "counts")))
    storage.remove(ctx.stage_dir("annotate", "_COMPLETE.json"))  # stopped after two of three shards
    storage.remove(counts[1])
    capsys.readouterr()
    summary = _run(ctx)["summary"]
    out = capsys.readouterr().out
    assert "annotating 1 of 3 record shards" in out and "2 done by an earlier attempt" in out
    assert summary["shards_annotated"] == 1 and summary["images"] == len(GIVEN)
    assert pq.read_table(ctx.annotations).sort_by("key").equals(before)


def test_crop_tags_are_what_the_model_finds_in_each_crop_without_the_foreground(setup):
    """With annotate.crop_tags the annotator also runs on each record's attacked crop (the embed
    stage's rule on the annotated boxes and label), in the same batches; the label's object is
    masked out; the one-model SSL test's naive-Bayes predictor reads them by default."""
    from study.annotate.detections import Thresholds
    from study.embed.views import crop_for
    from study.kinds.ssl_dejavu.one_model import _tags

    base, model = setup
    cfg = load_config(None, [*(f"{k}={v}" for k, v in _flat(base)), "annotate.crop_tags=true",
                             "embed.crop.min_side=4"], base.output)
    assert cfg.measure.one_model_tagger == "crop_tags"  # the default once an annotator tags the crops
    ctx = RunContext.create(cfg)
    digests, timings = {}, {}
    for stage in stages()[:2]:  # data, annotate
        _run_stage(ctx, stage, digests, timings)
    names, th = parse(WORDS, "test").names, Thresholds()
    side = {r["key"]: r for r in pq.read_table(ctx.annotations).to_pylist()}
    sizes, first, want, masked = [s for sh in SHARDS for s in sh], 0, {}, 0
    for shard in SHARDS:
        for b in range(0, len(shard), BATCH):
            ids = [f"r{first + b + j}" for j in range(len(shard[b:b + BATCH]))]
            rects = {}
            for i in ids:
                r = side[i]
                boxes = [(x["x0"], x["y0"], x["x1"], x["y1"]) for x in r["boxes"]]
                rect, _ = crop_for(*sizes[int(i[1:])], boxes, r["label"], cfg.embed.crop)
                if rect is not None:
                    rects[i] = rect
            crops = [Image.open(io.BytesIO(_png(int(i[1:]), sizes[int(i[1:])]))).convert("RGB").crop(rects[i]) for i in rects]
            for i, kept in zip(rects, _by_hand(model, crops, parse(WORDS, "test"), th) if crops else []):
                want[i] = sorted({names[k[1]] for k in kept} - {names[side[i]["label"]]})
                masked += names[side[i]["label"]] in {names[k[1]] for k in kept}
        first += len(shard)
    got = {i: r["crop_tags"] for i, r in side.items() if r["crop_tags"] is not None}
    assert got == want and len(got) >= 3 and any(got.values())  # crops, some with tags
    assert masked >= 1  # the model found a crop's foreground object, and it is not among the tags
    assert all(names[side[i]["label"]] not in tags for i, tags in got.items())
    ids = sorted(side)
    assert _tags(ctx, ids) == [side[i]["crop_tags"] or [] for i in ids]  # what the predictor reads
    assert storage.read_json(ctx.stage_dir("annotate", "_COMPLETE.json"))["summary"]["crop_tags"]["records_with_a_crop"] == len(got)


def _flat(cfg) -> list[tuple[str, object]]:
    """The settings the fixture's config was made with, as key=value pairs."""
    a = cfg.annotate
    return [("data.source", "parquet"), ("data.path", cfg.data.path), ("annotate.annotator", a.annotator),
            ("annotate.weights", a.weights), ("annotate.architecture", a.architecture),
            ("annotate.image_size", a.image_size), ("annotate.vocabulary", a.vocabulary),
            ("annotate.batch_size", a.batch_size), ("annotate.replicas", a.replicas),
            ("annotate.cpus_per_replica", a.cpus_per_replica)]


def test_weights_that_do_not_load_stop_the_stage_with_one_line(setup, tmp_path, capsys):
    from study.cli import main

    cfg, _ = setup
    (tmp_path / "notes.pt").write_text("not weights")
    import os

    tiny = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.yaml")
    args = ["run", tiny, "--until", "annotate", "--output", str(tmp_path / "runs")]
    for o in ("data.source=parquet", f"data.path={cfg.data.path}", "annotate.annotator=torchvision",
              f"annotate.weights={tmp_path / 'notes.pt'}", "annotate.image_size=160"):
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: annotate.weights: ") and "is not a PyTorch state dict" in err[-1]
    assert "retries" not in "\n".join(err)  # a user's mistake, not a lost worker: not retried


def _transformers(folder, th):
    """OWL-ViT of a few layers with random weights (tests/test_hf_detectors.py), saved as a folder."""
    from test_hf_detectors import TEMPLATES, _by_hand as hf_by_hand, small_model

    model, path = small_model("owlvit", folder)
    sets = [f"annotate.weights={path}", "annotate.architecture=", f"annotate.templates={list(TEMPLATES)}"]
    return sets, lambda images, vocabulary: hf_by_hand("owlvit", model, path, images, vocabulary, th)


def _open_clip(folder, th):
    """The product's tiny open_clip model with random weights, saved as a state dict."""
    import open_clip
    from test_annotators import _tags_by_hand

    from study.train.clip import register_model_configs

    register_model_configs()
    torch.manual_seed(5)
    model = open_clip.create_model("dejavu-tiny").eval()
    torch.save(model.state_dict(), folder / "clip.pt")
    templates = ("a photo of a {}.", "a picture of the {}")
    sets = [f"annotate.weights={folder / 'clip.pt'}", "annotate.architecture=dejavu-tiny",
            f"annotate.templates={list(templates)}", "annotate.max_tags=3"]

    def oracle(images, vocabulary):  # tags as (score, object, no box)
        return [[(p, o, None) for o, p in tags] for tags in _tags_by_hand(model, images, vocabulary, templates, th, 3)]
    return sets, oracle


@pytest.mark.parametrize("annotator, build", [("transformers", _transformers), ("open_clip", _open_clip)])
def test_every_annotator_writes_what_its_model_gives_through_two_replicas(setup, annotator, build, tmp_path):
    """The open-vocabulary detector and the tagger through the same pool of two replicas over the
    same shards: each record's row equals its model run directly in the same batches."""
    from study.annotate.detections import Thresholds

    base, _ = setup
    th = Thresholds(score=0.0, nms_iou=0.3, max_per_image=20)
    sets, oracle = build(tmp_path, th)
    keep = [f"{k}={v}" for k, v in _flat(base) if k not in ("annotate.weights", "annotate.architecture")]
    cfg = load_config(None, [*keep, f"annotate.annotator={annotator}", *sets, "annotate.score=0.0",
                             "annotate.nms_iou=0.3", "annotate.max_per_image=20"], str(tmp_path / "runs"))
    ctx = RunContext.create(cfg)
    summary = _run(ctx)["summary"]
    vocabulary = parse(WORDS, "test")
    sizes, first, want = [s for sh in SHARDS for s in sh], 0, []
    for shard in SHARDS:
        images = [Image.open(io.BytesIO(_png(first + j, size))).convert("RGB") for j, size in enumerate(shard)]
        for b in range(0, len(images), BATCH):
            want += oracle(images[b:b + BATCH], vocabulary)
        first += len(shard)
    assert len(want) == len(sizes) == summary["images"] and sum(len(w) for w in want) >= len(sizes)
    side = {r["key"]: r for r in pq.read_table(ctx.annotations).to_pylist()}
    for i, kept in enumerate(want):
        row = side[f"r{i}"]
        assert row["objects"] == sorted({vocabulary.names[k[1]] for k in kept})
        np.testing.assert_allclose(row["scores"], [k[0] for k in kept], rtol=1e-4, atol=1e-6)
        if annotator == "open_clip":  # tags: no boxes, the most probable tag labels the image
            assert row["boxes"] == [] and row["label"] == kept[0][1]
        else:
            got = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in row["boxes"]]).reshape(-1, 4)
            np.testing.assert_allclose(got, np.array([k[2] for k in kept]).reshape(-1, 4), atol=1e-2)
            assert [b["label"] for b in row["boxes"]] == [k[1] for k in kept]
    assert summary["annotator"] == annotator and summary["fingerprint"] and ", " not in summary["fingerprint"]  # one model
