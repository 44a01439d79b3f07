"""Record quarantine rules (core.quality) and the split plan every stage applies (core.split_plan)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from study.core import quality as q
from study.core.split_plan import QUARANTINED, SplitPlan
from study.core.splits import assign_splits
from study.data.records import BOX_TYPE


@pytest.mark.parametrize("boxes, reason", [
    ([], None),
    ([(1, 1, 5, 5)], None),
    ([(-3, -2, 5, 5)], None),  # sticks out: clipped, sound
    ([(8, 8, 14, 14)], None),
    ([(5, 1, 1, 5)], q.BOX_INVERTED),
    ([(1, 5, 5, 1)], q.BOX_INVERTED),
    ([(2, 2, 2, 6)], q.BOX_ZERO_AREA),
    ([(10, 0, 12, 5)], q.BOX_OUTSIDE),  # touches the right edge from outside: nothing left after clipping
    ([(-4, -4, 0, 3)], q.BOX_OUTSIDE),
    ([(0.1, 0.1, 0.5, 0.9)], q.BOX_NORMALISED),
    ([(1, 1, 2, 2), (0.1, 0.1, 0.5, 0.9)], None),  # one pixel box among others is not "all normalised"
    ([(0, 0, float("inf"), 2)], q.BOX_NOT_FINITE),
])
def test_box_reason(boxes, reason):
    assert q.box_reason(10, 10, boxes) == reason


def test_tiny_images_may_have_boxes_inside_the_unit_square():
    assert q.box_reason(2, 2, [(0, 0, 1, 1)]) is None


def test_record_reasons_follow_the_split_needs():
    cols = {
        "width": [10] * 5, "height": [10] * 5,
        "label": [1, None, 2, -1, None],
        "boxes": [[(1, 1, 3, 3)], [(1, 1, 3, 3)], None, [(1, 1, 3, 3)], [{"x0": 5, "y0": 1, "x1": 1, "y1": 3}]],
        "caption": ["a cat", "x", " ", None, "y"],
    }
    needs = {"target": ("label", "boxes"), "public": ("label",), "shared": ("caption",)}
    split = np.array(["target", "target", "target", "public", "unassigned"], dtype=object)
    assert q.record_reasons(cols, split, needs) == [None, "missing_label", "missing_boxes", "bad_label", "box_inverted"]
    split = np.array(["shared"] * 5, dtype=object)
    assert q.record_reasons(cols, split, needs) == [None, None, "missing_caption", "missing_caption", "box_inverted"]


def test_a_needed_column_the_records_lack_is_missing_everywhere():
    split = np.array(["target", "public"], dtype=object)
    assert q.record_reasons({"width": [4, 4], "height": [4, 4]}, split, {"target": ("objects",)}) == ["missing_objects", None]


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = [int(v) if v >= 0 else None for v in rng.integers(-1, 5, n)]
    boxes = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            boxes.append(None)
        elif kind == 1:
            boxes.append([{"x0": 1.0, "y0": 1.0, "x1": 4.0, "y1": 4.0, "label": 0}])
        elif kind == 2:
            boxes.append([{"x0": 4.0, "y0": 1.0, "x1": 1.0, "y1": 4.0, "label": 0}])
        else:
            boxes.append([])
    return pa.table({"id": [f"r{i}" for i in range(n)], "width": pa.array([16] * n, pa.int32()),
                     "height": pa.array([16] * n, pa.int32()), "label": pa.array(labels, pa.int32()),
                     "boxes": pa.array(boxes, pa.list_(BOX_TYPE))})


def test_split_plan_is_the_hash_plan_with_quarantine():
    """Oracle: the keyed-hash split, then per record the naive rule written out here."""
    fractions = {"target": 0.3, "reference": 0.3, "public": 0.3}
    needs = {"target": ("label", "boxes"), "reference": ("label", "boxes"), "public": ("label",)}
    batch = _batch(400)
    plan = SplitPlan(fractions, 7, needs, tuple(batch.column_names))
    split, reasons = plan.assign_with_reasons(batch)
    hashed = assign_splits(batch.column("id").to_pylist(), fractions, 7)
    for i, (s, h, r) in enumerate(zip(split, hashed, reasons)):
        label, boxes = batch.column("label")[i].as_py(), batch.column("boxes")[i].as_py()
        want = None
        if h in needs and label is None:
            want = "missing_label"
        elif h in ("target", "reference") and boxes is None:
            want = "missing_boxes"
        elif boxes and boxes[0]["x0"] > boxes[0]["x1"]:
            want = "box_inverted"
        assert r == want, i
        assert s == (QUARANTINED if want else h)
    assert set(reasons) == {None, "missing_label", "missing_boxes", "box_inverted"}


def test_split_plan_refuses_a_batch_without_its_columns():
    plan = SplitPlan({"target": 0.5, "public": 0.5}, 0, {"target": ("label",)}, ("label", "width"))
    with pytest.raises(ValueError, match="label"):
        plan.assign(pa.table({"id": ["a"], "width": [3]}))


def test_cli_unwraps_a_study_error_raised_inside_a_task():
    from study.cli import _study_error
    from study.errors import DataError

    inner = DataError("record ids must not be null in /data/x")
    try:
        try:
            raise inner
        except DataError as e:
            raise RuntimeError("Task failed") from e
    except RuntimeError as outer:
        assert _study_error(outer) is inner
    assert _study_error(RuntimeError("a bug")) is None
