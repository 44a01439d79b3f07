"""Synthetic scenes (DESIGN §3): deterministic, boxes hold the objects, the correlation knob works."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from study.config import DataConfig
from study.core.crops import background_crop, pixel_boxes
from study.data import records
from study.data.synthetic import class_colour, iter_shards, make_record


def ink_mask(image, label, num_classes):
    """Pixels within one unit of the class colour in every channel (rounding or truncation)."""
    colour = class_colour(label, num_classes)
    return np.all(np.abs(image.astype(np.float64) - colour) < 1.0, axis=-1)


def box_mask(shape, boxes):
    m = np.zeros(shape[:2], dtype=bool)
    for x0, y0, x1, y1 in pixel_boxes(shape[1], shape[0], boxes):
        m[y0:y1, x0:x1] = True
    return m


def as_tuples(boxes):
    return [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in boxes]


def test_png_round_trip_is_lossless():
    img = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    out = records.decode_image(records.encode_png(img))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    assert np.array_equal(out, img)


def test_same_seed_and_index_give_identical_bytes():
    cfg = DataConfig(seed=5, objects_per_image=(1, 3))
    assert make_record(17, cfg) == make_record(17, cfg)
    other_seed = make_record(17, DataConfig(seed=6, objects_per_image=(1, 3)))
    assert other_seed["image"] != make_record(17, cfg)["image"]
    assert other_seed["id"] != make_record(17, cfg)["id"]
    assert make_record(18, cfg)["image"] != make_record(17, cfg)["image"]


def test_record_fields():
    cfg = DataConfig(image_size=40, num_classes=7, objects_per_image=(2, 2), seed=1)
    r = make_record(3, cfg)
    img = records.decode_image(r["image"])
    assert img.shape == (40, 40, 3) and r["width"] == r["height"] == 40
    assert len(r["boxes"]) == 2
    assert r["label"] == r["boxes"][0]["label"]
    assert all(0 <= b["label"] < 7 for b in r["boxes"])
    assert r["caption"].startswith("the digit ")
    assert r["objects"] == sorted(set(r["objects"])) and 1 <= len(r["objects"]) <= 2


@pytest.mark.parametrize("objects", [(1, 1), (2, 4)])
def test_boxes_inside_image_and_hold_their_class_ink(objects):
    cfg = DataConfig(image_size=32, num_classes=10, objects_per_image=objects, object_scale=(0.25, 0.4), seed=2)
    for i in range(60):
        r = make_record(i, cfg)
        img = records.decode_image(r["image"])
        size = cfg.image_size
        for b in r["boxes"]:
            assert 0 <= b["x0"] < b["x1"] <= size and 0 <= b["y0"] < b["y1"] <= size
        labels = {b["label"] for b in r["boxes"]}
        for lab in labels:
            ink = ink_mask(img, lab, cfg.num_classes)
            own = box_mask(img.shape, as_tuples([b for b in r["boxes"] if b["label"] == lab]))
            assert ink.any(), (r["id"], lab)
            # Every ink pixel of a class lies inside a box of that class.
            assert not (ink & ~own).any(), (r["id"], lab)
        if objects == (1, 1):
            # A single glyph's box is the ink's exact extent: ink touches all four box edges.
            b = r["boxes"][0]
            ys, xs = np.nonzero(ink_mask(img, b["label"], cfg.num_classes))
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (b["x0"], b["y0"], b["x1"], b["y1"])


def test_background_crop_shows_no_object_ink():
    cfg = DataConfig(image_size=32, num_classes=10, objects_per_image=(1, 3), seed=4)
    kept = 0
    for i in range(60):
        r = make_record(i, cfg)
        img = records.decode_image(r["image"])
        rect, _ = background_crop(32, 32, as_tuples(r["boxes"]), min_side=4)
        if rect is None:
            continue
        kept += 1
        x0, y0, x1, y1 = rect
        crop = img[y0:y1, x0:x1]
        for lab in {b["label"] for b in r["boxes"]}:
            assert not ink_mask(crop, lab, cfg.num_classes).any(), r["id"]
    assert kept > 30


def test_iter_shards_counts_and_order():
    cfg = DataConfig(num_images=25, shard_size=10, seed=3)
    shards = list(iter_shards(cfg))
    assert [s for s, _ in shards] == [0, 1, 2]
    assert [len(cols["id"]) for _, cols in shards] == [10, 10, 5]
    assert all(list(cols) == records.RECORD_SCHEMA.names for _, cols in shards)
    ids = [i for _, cols in shards for i in cols["id"]]
    assert ids == [make_record(i, cfg)["id"] for i in range(25)]
    assert len(set(ids)) == 25
    assert shards[2][1]["image"][4] == make_record(24, cfg)["image"]
    # The columns fit the record schema.
    table = pa.table(shards[0][1], schema=records.RECORD_SCHEMA)
    assert table.num_rows == 10


def background_features(cfg, n):
    """Mean RGB of the pixels outside every box, and the label, for the first n records."""
    X, y = [], []
    for i in range(n):
        r = make_record(i, cfg)
        img = records.decode_image(r["image"]).astype(np.float64)
        X.append(img[~box_mask(img.shape, as_tuples(r["boxes"]))].mean(0))
        y.append(r["label"])
    return np.array(X), np.array(y)


def nearest_centroid_accuracy(cfg, n=300):
    X, y = background_features(cfg, n)
    half = n // 2
    cents = np.array(
        [X[:half][y[:half] == c].mean(0) if np.any(y[:half] == c) else np.full(3, np.inf) for c in range(cfg.num_classes)]
    )
    pred = np.argmin(((X[half:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(pred == y[half:]))


def test_correlation_knob_controls_background_information():
    base = dict(num_images=300, image_size=32, num_classes=10, seed=7)
    # Chance is 0.1; with 150 test images its standard deviation is about 0.025.
    assert nearest_centroid_accuracy(DataConfig(correlation=1.0, **base)) > 0.7
    assert nearest_centroid_accuracy(DataConfig(correlation=0.0, **base)) < 0.22
    assert nearest_centroid_accuracy(DataConfig(correlation=1.0, background="texture_gray", **base)) > 0.5
