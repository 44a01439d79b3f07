"""What the model sees (study.embed.views): the driver's crop plan and the pipeline's batches agree."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from study.config import CropConfig, DataConfig
from study.core.crops import REASON_NO_BOXES, REASON_TOO_SMALL
from study.core.splits import assign_splits
from study.data import records
from study.data.synthetic import class_colour, make_record
from study.core.split_plan import SplitPlan
from study.data.model_input import ModelInput
from study.embed.views import CROP, REASON_NO_LABEL, WHOLE, crop_for, plan_crops, prepare_batch

FRACTIONS = {"target": 0.3, "reference": 0.3, "public": 0.3}
SPLIT_SEED = 3
CROP_SETS = ("target", "reference")
SIZE = 16
INPUTS = ModelInput(SIZE)
DATA = DataConfig(num_images=60, image_size=32, num_classes=10, objects_per_image=(3, 3), object_scale=(0.45, 0.6), seed=1)
CROP_CFG = CropConfig(rule="background", min_side=8)


@pytest.fixture(scope="module")
def table():
    rows = [make_record(i, DATA) for i in range(60)]
    # Two records with no label and one without boxes; the rest are synthetic scenes.
    for j in range(0, 60, 25):
        rows[j]["label"] = None
    rows[7]["boxes"] = []
    cols = {name: [r[name] for r in rows] for name in records.RECORD_SCHEMA.names}
    return pa.table(cols, schema=records.RECORD_SCHEMA)


def split_of(table):
    return assign_splits(table.column("id").to_pylist(), FRACTIONS, SPLIT_SEED)


def run_batches(table, modes, batch_rows=7):
    out = {"id": [], "set": [], "pixels": []}
    for start in range(0, table.num_rows, batch_rows):
        got = prepare_batch(table.slice(start, batch_rows), SplitPlan(FRACTIONS, SPLIT_SEED), modes, CROP_CFG, INPUTS)
        for k in out:
            out[k].extend(list(got[k]))
        assert got["pixels"].dtype == np.uint8 and got["pixels"].shape[1:] == (SIZE, SIZE, 3)
        assert len(got["id"]) == len(got["set"]) == len(got["pixels"])
    return out


def test_plan_counts_add_up_and_reasons_are_present(table):
    s = split_of(table)
    rows, summary = plan_crops(table, s, CROP_SETS, CROP_CFG)
    assert set(summary) == set(CROP_SETS)
    for name in CROP_SETS:
        c = summary[name]
        assert c["embedded"] + sum(c["skipped"].values()) == int(np.sum(s == name))
    reasons = Counter(r["reason"] for r in rows)
    # The config is built so that every path is taken at least once.
    assert reasons[None] > 0 and reasons[REASON_TOO_SMALL] > 0
    assert reasons[REASON_NO_LABEL] > 0 and reasons[REASON_NO_BOXES] > 0
    # Rows cover exactly the records of the crop sets.
    ids = table.column("id").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(i for i, x in zip(ids, s) if x in CROP_SETS)
    for r in rows:
        assert (r["rect"] is None) != (r["reason"] is None)


def test_null_label_and_no_boxes_are_skipped_with_reasons(table):
    labels = table.column("label").to_pylist()
    widths = table.column("width").to_pylist()
    all_sets = ("target", "reference", "public")
    # Plan every set, so the edited records land in a planned set whatever their split.
    rows, _ = plan_crops(table, split_of(table), all_sets, CROP_CFG)
    by_id = {r["id"]: r for r in rows}
    ids = table.column("id").to_pylist()
    planned_unlabelled = [ids[j] for j in range(0, 60, 25) if ids[j] in by_id]
    assert all(labels[j] is None for j in range(0, 60, 25))
    assert len(planned_unlabelled) >= 2  # not vacuous: most records fall in a planned set
    assert all(by_id[i]["reason"] == REASON_NO_LABEL for i in planned_unlabelled)
    assert by_id[ids[7]]["reason"] == REASON_NO_BOXES
    assert crop_for(widths[0], 32, [(0, 0, 4, 4)], None, CROP_CFG) == (None, REASON_NO_LABEL)
    assert crop_for(32, 32, [], 3, CROP_CFG) == (None, REASON_NO_BOXES)


def test_unlabelled_record_in_a_crop_set_is_counted():
    # Search for a few ids that land in "target" and build a tiny table with one unlabelled one.
    rows = [make_record(i, DATA) for i in range(20)]
    s = assign_splits([r["id"] for r in rows], FRACTIONS, SPLIT_SEED)
    t = [r for r, x in zip(rows, s) if x == "target"]
    assert len(t) >= 2
    t[0]["label"] = None
    tbl = pa.table({n: [r[n] for r in t] for n in records.RECORD_SCHEMA.names}, schema=records.RECORD_SCHEMA)
    _, summary = plan_crops(tbl, np.array(["target"] * len(t), dtype=object), ("target",), CROP_CFG)
    assert summary["target"]["skipped"].get(REASON_NO_LABEL) == 1
    got = prepare_batch(tbl, SplitPlan(FRACTIONS, SPLIT_SEED), {"target": CROP}, CROP_CFG, INPUTS)
    assert t[0]["id"] not in set(got["id"])


def test_prepare_batch_emits_exactly_the_planned_crops(table):
    s = split_of(table)
    rows, summary = plan_crops(table, s, CROP_SETS, CROP_CFG)
    modes = {"public": WHOLE, **{name: CROP for name in CROP_SETS}}
    out = run_batches(table, modes)
    emitted = {name: sorted(i for i, x in zip(out["id"], out["set"]) if x == name) for name in modes}
    for name in CROP_SETS:
        planned = sorted(r["id"] for r in rows if r["set"] == name and r["rect"] is not None)
        assert emitted[name] == planned
        assert len(planned) == summary[name]["embedded"]
    ids = table.column("id").to_pylist()
    assert emitted["public"] == sorted(i for i, x in zip(ids, s) if x == "public")
    # No record outside the requested sets.
    assert set(out["set"]) <= set(modes)


def test_whole_images_and_crops_have_the_right_content(table):
    s = split_of(table)
    rows, _ = plan_crops(table, s, CROP_SETS, CROP_CFG)
    rect_of = {r["id"]: r["rect"] for r in rows}
    modes = {"public": WHOLE, **{name: CROP for name in CROP_SETS}}
    out = run_batches(table, modes, batch_rows=60)
    raw = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist()))
    boxes = dict(zip(table.column("id").to_pylist(), table.column("boxes").to_pylist()))
    n_checked = 0
    for rid, name, pix in zip(out["id"], out["set"], out["pixels"]):
        img = records.decode_image(raw[rid])
        if name == "public":
            # Whole image downscaled 32 -> 16 (antialiased): same mean colour, and the output
            # follows the 2x2 block means closely (an unrelated image would not).
            img = img.astype(np.float64)
            block = img.reshape(SIZE, 2, SIZE, 2, 3).mean(axis=(1, 3))
            assert np.abs(pix.reshape(-1, 3).mean(0) - img.reshape(-1, 3).mean(0)).max() < 3
            assert np.corrcoef(pix.ravel().astype(np.float64), block.ravel())[0, 1] > 0.9
            continue
        x0, y0, x1, y1 = rect_of[rid]
        assert min(x1 - x0, y1 - y0) >= CROP_CFG.min_side
        # A crop shows no object ink (glyph pixels are exactly the class colour).
        for b in boxes[rid] or []:
            colour = class_colour(b["label"], DATA.num_classes)
            assert not np.all(np.abs(pix.astype(np.float64) - colour) < 1.0, axis=-1).any()
        # Mean colour is preserved by the resize (up to interpolation at the borders).
        crop = img[y0:y1, x0:x1].astype(np.float64)
        assert np.abs(pix.reshape(-1, 3).mean(0) - crop.reshape(-1, 3).mean(0)).max() < 15
        n_checked += 1
    assert n_checked > 0


def test_corner_rule_crops_everything_labelled(table):
    s = split_of(table)
    corner = CropConfig(rule="corner", corner_fraction=0.5)
    rows, summary = plan_crops(table, s, CROP_SETS, corner)
    labels = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
    for r in rows:
        if labels[r["id"]] is None:
            assert r["reason"] == REASON_NO_LABEL
        else:
            assert r["rect"] == (0, 0, 16, 16)
    got = prepare_batch(table, SplitPlan(FRACTIONS, SPLIT_SEED), {n: CROP for n in CROP_SETS}, corner, INPUTS)
    img_by_id = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist()))
    for rid, pix in zip(got["id"], got["pixels"]):
        # A 16x16 corner resized to 16x16 is the corner itself.
        assert np.array_equal(pix, records.decode_image(img_by_id[rid])[:16, :16])
    assert len(got["id"]) == sum(c["embedded"] for c in summary.values())


def test_empty_batch_output_shape(table):
    got = prepare_batch(table.slice(0, 5), SplitPlan(FRACTIONS, SPLIT_SEED), {}, CROP_CFG, INPUTS)
    assert got["pixels"].shape == (0, SIZE, SIZE, 3) and got["pixels"].dtype == np.uint8
    assert len(got["id"]) == 0
