"""Training from a Ray Data stream: the rows it yields equal the in-memory loader's, bit for bit, on
photographs of mixed sizes, aspect ratios, encodings and modes; and both recipes train through
``ray.train.get_dataset_shard`` on two workers."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from study import storage
from study.config import DataConfig, ModelConfig, SplitConfig, StudyConfig, TrainConfig
from study.core.split_plan import SplitPlan
from study.data import records, synthetic
from study.data.loading import load_training_pairs, load_training_set, read_split
from study.data.model_input import ModelInput
from study.data.synth_write import to_jpeg
from study.frame.context import RunContext
from study.stages.splits import run_splits
from study.train.driver import TrainJob, fit
from study.train.stream import count_rows, training_dataset, use_stream

FRACTIONS = {"target": 0.3, "reference": 0.3, "public": 0.3, "holdout": 0.1, "shared": 0.0}
BLANK = range(3, 400, 29)  # records whose caption is blanked
SIZE = 16


def _as_users_store_them(rows: dict, start: int) -> None:
    """Every third image re-encoded as JPEG, every seventh as greyscale PNG (the rest stay RGB PNG)."""
    for j in range(len(rows["id"])):
        pixels = records.decode_image(rows["image"][j])
        if (start + j) % 3 == 0:
            rows["image"][j] = to_jpeg(rows["image"][j])
        elif (start + j) % 7 == 0:
            buf = io.BytesIO()
            Image.fromarray(pixels).convert("L").save(buf, format="PNG")
            rows["image"][j] = buf.getvalue()


@pytest.fixture(scope="module")
def planned(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    # Photographs 8-32 px on a side for 16 px model inputs: smaller, larger, portrait and landscape.
    cfg = StudyConfig(output=str(tmp), data=DataConfig(num_images=400, image_size=SIZE, num_classes=4, shard_size=150,
                                                       background="photo", size_range=(0.5, 2.0)),
                      splits=SplitConfig(seed=1, fractions=FRACTIONS))
    ctx = RunContext.create(cfg)
    for shard, rows in synthetic.iter_shards(cfg.data):
        for j in range(len(rows["id"])):
            if shard * 150 + j in BLANK:
                rows["caption"][j] = ""
        _as_users_store_them(rows, shard * 150)
        records.write_shard(storage.join(ctx.data_root, f"part-{shard:05d}.parquet"), rows)
    run_splits(ctx)
    return ctx


def _take_all(ds) -> dict:
    rows = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    out = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    order = np.argsort(out["id"].astype(str))
    return {k: v[order] for k, v in out.items()}


def test_the_inputs_are_users_photographs(planned):
    table = records.read_records(planned.data_root, [f"syn-0-{i:08d}" for i in range(60)], columns=["image", "width"])
    shapes = {records.decode_image(b).shape[:2] for b in table.column("image").to_pylist()}
    assert len(shapes) > 30 and any(h > w for h, w in shapes) and any(h < w for h, w in shapes)
    assert min(min(s) for s in shapes) < SIZE < max(max(s) for s in shapes)
    assert {Image.open(io.BytesIO(b)).format for b in table.column("image").to_pylist()} == {"PNG", "JPEG"}


@pytest.mark.parametrize("rule", ["squash", "center_crop"])
def test_streamed_rows_equal_the_in_memory_loader(planned, rule):
    ctx = planned
    splits = ("target",)
    inputs = ModelInput(SIZE, rule)
    streamed = _take_all(training_dataset(ctx.data_root, SplitPlan(FRACTIONS, 1), splits, inputs, text=False))
    images, labels = load_training_set(ctx.data_root, ctx.splits_dir, splits, inputs)
    assert images.shape == (len(labels), 3, SIZE, SIZE) and images.dtype == np.uint8
    assert list(streamed["id"]) == list(read_split(ctx.splits_dir, "target")[0])
    np.testing.assert_array_equal(streamed["image"], images)
    np.testing.assert_array_equal(streamed["label"], labels)
    # The same tensor the embed stage makes of the record's whole image.
    first = records.read_records(ctx.data_root, [streamed["id"][0]], columns=["image"]).column("image")[0].as_py()
    np.testing.assert_array_equal(images[0], inputs.of_bytes(first).transpose(2, 0, 1))
    pairs = _take_all(training_dataset(ctx.data_root, SplitPlan(FRACTIONS, 1), ("target", "reference"), inputs,
                                       text=True))
    images, captions = load_training_pairs(ctx.data_root, ctx.splits_dir, ("target", "reference"), inputs)
    np.testing.assert_array_equal(pairs["image"], images)
    assert list(pairs["caption"]) == captions
    inside, usable = count_rows(ctx.data_root, SplitPlan(FRACTIONS, 1), ("target", "reference"), text=True)
    assert usable == len(captions) and inside - usable > 0
    assert inside == sum(len(read_split(ctx.splits_dir, s)[0]) for s in ("target", "reference"))


def test_auto_streams_only_large_sets():
    assert not use_stream(TrainConfig(), 1000, 32)
    assert use_stream(TrainConfig(), 1_000_000, 224)
    assert use_stream(TrainConfig(stream="always"), 10, 32)
    assert not use_stream(TrainConfig(stream="never"), 10**9, 224)


# DINO for the SSL recipe: under DistributedDataParallel it also keeps a teacher (no gradients,
# a moving average) and a loss centre all-reduced across the workers. The records are the
# module's photographs of mixed sizes; CLIP also trains from memory on them (the in-memory SSL
# study over photographs is tests/test_photos_e2e.py).
@pytest.mark.parametrize("recipe,method,stream", [("ssl", "dino", True), ("clip", "clip", True),
                                                  ("clip", "clip", False)])
def test_both_recipes_train_on_two_workers_from_the_stream_or_memory(planned, recipe, method, stream, tmp_path):
    ctx = planned
    splits = ("target",)
    inside, usable = count_rows(ctx.data_root, SplitPlan(FRACTIONS, 1), splits, text=recipe == "clip")
    cfg = TrainConfig(method=method, epochs=2, global_batch_size=16, num_workers=2, cpus_per_worker=0.5,
                      checkpoint_every=1, stream="always" if stream else "never")
    model_cfg = ModelConfig(backbone="small_cnn", projector_dims=(32, 16), clip="dejavu-tiny")
    size = 32 if recipe == "clip" else 16  # the tiny CLIP tower needs 32 px; the stream resizes
    context = {"recipe": recipe, "data_root": ctx.data_root, "splits_dir": ctx.splits_dir, "num_classes": 4,
               "inputs": ModelInput(size), "split_plan": SplitPlan(FRACTIONS, 1)}
    out = str(tmp_path / recipe)
    fit(TrainJob("m", splits, out, usable, stream=stream), cfg, model_cfg, context, use_gpu=False)
    history = [line for line in open(os.path.join(out, "metrics.jsonl"))]
    assert len(history) == 2 and os.path.exists(os.path.join(out, "model.pt"))
    assert all(np.isfinite(json.loads(line)["loss"]) for line in history)
