"""Studies over photographs as users bring them, end to end: a COCO dataset of JPEG photographs
(scikit-image's sample photographs as backgrounds, digit objects with boxes and captions) from
half to twice the model's input size on each side, portrait and landscape, read by the COCO
reader. The SSL study trains in memory under the ``squash`` rule; the VLM study streams its
training through Ray Data under ``center_crop``. Each embedding the embed stage wrote is the
trained model's output on the record's model input (``data.model_input``), the tensor training
saw (tests/test_train_stream.py checks that the two training paths give the same tensors).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from study import storage
from study.cli import main
from study.config_load import load_config
from study.data import records
from study.data.loading import read_split
from study.frame.context import RunContext
from study.stages.search import read_embeddings
from study.data.model_input import ModelInput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 320
GEN = ["data.background=photo", "data.size_range=[0.5, 2.0]", "data.image_size=32", "data.num_classes=4",
       "data.objects_per_image=[1, 2]", "data.object_scale=[0.3, 0.4]", "data.shard_size=100"]
FRACTIONS = "splits.fractions={target: 0.2, reference: 0.2, holdout: 0.1, public: 0.5}"


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def photo_coco(ray_local, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("photos") / "coco")
    assert main(["data", "synth", "--format", "coco", "--num", str(N), "--output", out, *_sets(GEN)]) == 0
    return out


def _study(coco: str, out: str, config: str, overrides: list[str]) -> tuple[RunContext, dict]:
    source = ["data.source=coco", f"data.path={coco}/images", f"data.coco.instances={coco}/annotations/instances.json",
              f"data.coco.captions={coco}/annotations/captions.json", "data.shard_size=100", FRACTIONS]
    config = os.path.join(ROOT, config)
    assert main(["run", config, "--output", out, *_sets(source + overrides)]) == 0
    ctx = RunContext.create(load_config(config, source + overrides, out))
    return ctx, storage.read_json(ctx.report_json)


@pytest.fixture(scope="module")
def ssl_run(photo_coco, tmp_path_factory):
    return _study(photo_coco, str(tmp_path_factory.mktemp("ssl")), "configs/tiny.yaml",
                  ["data.image_size=24", "train.epochs=2", "train.checkpoint_every=2", "embed.crop.min_side=6"])


@pytest.fixture(scope="module")
def vlm_run(photo_coco, tmp_path_factory):
    return _study(photo_coco, str(tmp_path_factory.mktemp("vlm")), "configs/quickstart-vlm.yaml",
                  ["data.image_size=32", "data.resize=center_crop", "train.stream=always", "train.epochs=2", "train.warmup_epochs=0",
                   "train.checkpoint_every=2", "search.k=10", "measure.ks=[1, 10]", "measure.bootstrap=100",
                   "measure.permutations=100", "measure.utility_records=40"])


def test_the_input_is_jpeg_photographs_of_mixed_sizes(photo_coco):
    images = json.load(open(os.path.join(photo_coco, "annotations", "instances.json")))["images"]
    sizes = {(im["width"], im["height"]) for im in images}
    assert len(sizes) > N // 4
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert min(min(s) for s in sizes) < 24 and max(max(s) for s in sizes) > 40
    with Image.open(os.path.join(photo_coco, "images", images[0]["file_name"])) as im:
        assert im.format == "JPEG"


def _check_embeddings(ctx: RunContext, model: str, split: str, space: str, forward) -> None:
    """The stage's embeddings of ``split`` equal ``forward`` on the records' model inputs."""
    inputs = ModelInput.of(ctx.cfg.data)
    ids, emb = read_embeddings(ctx.embeddings(model, split, space))
    pick = [str(i) for i in ids[:24]]
    table = records.read_records(ctx.data_root, pick, columns=["id", "image"])
    by_id = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist()))
    x = torch.from_numpy(np.stack([inputs.of_bytes(by_id[i]) for i in pick])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        want = forward(x)
    np.testing.assert_allclose(emb[:24], want, rtol=1e-4, atol=1e-5)


def test_ssl_study_on_photographs_trains_in_memory(ssl_run):
    ctx, report = ssl_run
    for model in ("model_a", "model_b"):
        assert report["training"][model]["epochs"] == 2 and not report["training"][model]["streamed"]
    counts = {s: len(read_split(ctx.splits_dir, s)[0]) for s in ("target", "reference", "public", "holdout")}
    assert sum(counts.values()) == N
    for rep in ("projector", "backbone"):
        gap = report["results"][rep]["positive"]["top1"]["by_q"][-1]["gap"]
        assert -1 <= gap["value"] <= 1 and -1 <= gap["ci"][0] <= gap["ci"][1] <= 1 and gap["permutations"] == 100
    from study.train.models import load_model, normalize

    encoder, _ = load_model(storage.read_bytes(ctx.model_file("model_a")))
    _check_embeddings(ctx, "model_a", "public", "backbone", lambda x: encoder(normalize(x))[0].numpy())
    # A COCO source: the one-model test's tagger is off by default (a caption here names the
    # foreground, the label its predictor must not see), and the report says so.
    assert ctx.cfg.measure.one_model_tagger == ""
    one = report["one_model"]
    assert "predictors" not in one and "data.source=coco" in one["note"] and "foreground" in one["note"]
    page = open(ctx.report_html).read()
    assert "One-model test" in page and "by default off for data.source=coco" in page


def test_vlm_study_on_photographs_streams_its_training(vlm_run):
    ctx, report = vlm_run
    for model in ("model_a", "model_b"):
        assert report["training"][model]["epochs"] == 2 and report["training"][model]["streamed"]
    headline = report["results"]["spaces"]["caption_to_image"]["positive"][report["headline_key"]]
    assert headline["ppg"]["ci"][0] <= headline["ppg"]["value"] <= headline["ppg"]["ci"][1]
    assert report["utility"]["records"] > 0 and 0 <= report["utility"]["zero_shot"] <= 1
    from study.train.clip import encode_images, load_clip

    model, _, _ = load_clip(storage.read_bytes(ctx.model_file("model_a")))
    _check_embeddings(ctx, "model_a", "public", "image", lambda x: encode_images(model, x).numpy())
