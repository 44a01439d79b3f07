"""COCO-style inputs: annotation parsing on hand-built documents, the per-batch image reader on a
folder with broken files, and a round trip through the synthetic generator written as COCO.

The round trip's oracle is the generator itself: ids, boxes, objects, captions and pixels must
come back exactly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server fixture)

from study import storage
from study.config import DataConfig
from study.core import quality
from study.data import coco, records, synth_coco, synthetic
from study.data.laion import STATUS
from study.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATS = [{"id": 20, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]  # index: cat 0, dog 1, zebra 2


def image(i: int, **kw) -> dict:
    return {"id": i, "file_name": f"{i}.png", "width": 10, "height": 8, **kw}


def box(ann_id: int, image_id: int, cat: int, bbox: list) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox}


def instances(anns: list[dict], images=(1, 2)) -> dict:
    return {"images": [image(i) for i in images], "annotations": anns, "categories": CATS}


def captions(caps: list[tuple[int, int, str]], images=(1, 2)) -> dict:
    return {"images": [image(i) for i in images],
            "annotations": [{"id": a, "image_id": i, "caption": c} for a, i, c in caps]}


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["id"]: r for r in table.to_pylist()}


# -- parsing --------------------------------------------------------------------------------------
def test_boxes_become_corners_labelled_by_category_rank():
    rows = coco.parse_coco(instances([box(1, 1, 20, [1, 2, 3, 4]), box(2, 1, 3, [0.5, 0, 2, 2.5])]), None)
    r = by_id(rows)["1"]
    assert r["boxes"] == [{"x0": 1, "y0": 2, "x1": 4, "y1": 6, "label": 2},
                          {"x0": 0.5, "y0": 0, "x1": 2.5, "y1": 2.5, "label": 0}]
    assert r["objects"] == ["cat", "zebra"] and (r["file_name"], r["width"], r["height"]) == ("1.png", 10, 8)
    assert coco.category_names(rows) == ["cat", "dog", "zebra"]
    assert rows.schema.field("boxes").type == pa.list_(records.BOX_TYPE)


def test_box_geometry_is_passed_through_for_quality_to_judge():
    odd = [[0, 0, 0, 5], [5, 5, -3, 2], [-4, 100, 2, 2]]  # zero width, inverted, outside
    r = by_id(coco.parse_coco(instances([box(i, 1, 3, b) for i, b in enumerate(odd)]), None))["1"]
    corners = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in r["boxes"]]
    assert corners == [(0, 0, 0, 5), (5, 5, 2, 7), (-4, 100, -2, 102)]


@pytest.mark.parametrize("rule, anns, label", [
    ("largest", [(20, [0, 0, 2, 2]), (7, [0, 0, 3, 3]), (3, [0, 0, 1, 1])], 1),
    ("largest", [(20, [0, 0, 2, 2]), (7, [0, 0, 1, 4])], 1),  # tie on area: smaller index
    ("most_frequent", [(20, [0, 0, 1, 1]), (20, [0, 0, 1, 1]), (3, [0, 0, 9, 9])], 2),
    ("most_frequent", [(20, [0, 0, 1, 1]), (7, [0, 0, 1, 1])], 1),  # tie on count: smaller index
    ("none", [(20, [0, 0, 1, 1])], None),
])
def test_label_rules(rule, anns, label):
    doc = instances([box(i, 1, c, b) for i, (c, b) in enumerate(anns)])
    assert by_id(coco.parse_coco(doc, None, label_rule=rule))["1"]["label"] == label


def test_caption_modes():
    doc = captions([(12, 1, "later"), (5, 1, "earlier"), (9, 2, "only")])
    first = by_id(coco.parse_coco(None, doc, caption_mode="first"))
    assert {k: r["caption"] for k, r in first.items()} == {"1": "earlier", "2": "only"}
    each = coco.parse_coco(None, doc, caption_mode="each")
    assert [(r["id"], r["file_name"], r["caption"]) for r in each.to_pylist()] == [
        ("1-5", "1.png", "earlier"), ("1-12", "1.png", "later"), ("2-9", "2.png", "only")]


def test_images_without_annotations_or_captions():
    inst = instances([box(1, 1, 7, [0, 0, 2, 2])], images=(1, 2))
    caps = captions([(1, 1, "a dog"), (2, 3, "captions only")], images=(1, 2, 3))
    for mode in coco.CAPTION_MODES:
        rows = {r["file_name"]: r for r in coco.parse_coco(inst, caps, caption_mode=mode).to_pylist()}
        empty, caption_only = rows["2.png"], rows["3.png"]
        assert empty["id"] == "2"  # no caption: one record under the image id, whatever the mode
        assert (empty["boxes"], empty["objects"], empty["label"], empty["caption"]) == ([], [], None, None)
        assert (caption_only["boxes"], caption_only["objects"], caption_only["label"]) == (None, None, None)
        assert caption_only["caption"] == "captions only"
    assert list(by_id(coco.parse_coco(inst, caps, caption_mode="first"))) == ["1", "2", "3"]


def test_repeated_image_ids_stay_repeated():
    doc = {"images": [image(1), image(1)], "annotations": [], "categories": CATS}
    assert coco.parse_coco(doc, None).column("id").to_pylist() == ["1", "1"]


@pytest.mark.parametrize("inst, caps, message", [
    (None, None, "needs an instances or a captions"),
    ({"annotations": []}, None, "instances have no 'images' list"),
    (None, [1, 2], "captions have no 'images' list"),
    (instances([box(1, 1, 3, [0, 0, 1])]), None, "instances: bad 'bbox'"),
    (instances([box(1, 1, 3, [0, 0, "1", 1])]), None, "instances: bad 'bbox'"),
    (instances([box(1, 1, 3, None)]), None, "instances: bad 'bbox'"),
    (instances([box(1, 1, 4, [0, 0, 1, 1])]), None, "unknown category_id 4"),
    ({"images": [], "categories": CATS + [{"id": 7, "name": "wolf"}]}, None, "category id(s) [7] repeat"),
    (None, captions([(1, 1, None)]), "captions: bad 'caption'"),
    ({"images": [image(1, width="wide")]}, None, "instances: Could not convert 'wide'"),
])
def test_bad_annotations_are_data_errors(inst, caps, message):
    with pytest.raises(DataError) as err:
        coco.parse_coco(inst, caps)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_annotations_of_unlisted_images_are_counted_and_named():
    doc = instances([box(i, 9 + i % 2, 3, [0, 0, 1, 1]) for i in range(5)] + [box(5, 1, 3, [0, 0, 1, 1])])
    with pytest.raises(DataError) as err:
        coco.parse_coco(doc, None, names=("ann/instances.json", ""))
    assert str(err.value) == ("COCO annotations ann/instances.json: 5 annotation(s) name no listed image, "
                              "e.g. image_id 9, 10")


def test_bad_files_are_data_errors_naming_them(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    good = tmp_path / "captions.json"
    good.write_text(json.dumps(captions([(1, 1, "x")])))
    for path in (tmp_path / "broken.json", tmp_path / "absent.json"):
        with pytest.raises(DataError, match=str(path)):
            coco.load_coco(str(path), str(good))
    with pytest.raises(DataError, match="unknown COCO label rule 'biggest'"):
        coco.load_coco(None, str(good), label_rule="biggest")
    assert coco.load_coco(None, str(good)).column("caption").to_pylist() == ["x", None]


def test_parsing_loads_no_ray():
    code = "import sys, study.data.coco; print(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# -- reading images -------------------------------------------------------------------------------
def test_coco_batch_reads_images_and_marks_the_bad_ones(tmp_path):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    png = records.encode_png(pixels)
    (tmp_path / "good.png").write_bytes(png)
    (tmp_path / "short.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    (tmp_path / "folder.png").mkdir()
    names = ["good.png", "missing.png", "short.png", "notes.png", "folder.png"]
    doc = {"images": [{"id": i, "file_name": n, "width": 99, "height": 99} for i, n in enumerate(names)],
           "annotations": [box(1, 0, 7, [1, 1, 2, 2])], "categories": CATS}
    rows = coco.parse_coco(doc, None)
    out = coco.coco_batch(rows, str(tmp_path))
    assert out.schema.names == records.RECORD_SCHEMA.names + [STATUS]
    assert out.select(records.RECORD_SCHEMA.names).schema == records.RECORD_SCHEMA
    got = by_id(out)
    assert [got[str(i)][STATUS] for i in range(5)] == [
        quality.OK, quality.MISSING_IMAGE, quality.UNDECODABLE, quality.UNDECODABLE, quality.UNREADABLE]
    good = got["0"]
    assert (good["width"], good["height"]) == (7, 5)  # the image's size, not the annotation's 99 x 99
    assert np.array_equal(records.decode_image(good["image"]), pixels)
    assert good["boxes"] == [{"x0": 1, "y0": 1, "x1": 3, "y1": 3, "label": 1}] and good["objects"] == ["dog"]
    for i in range(1, 5):
        assert (got[str(i)]["image"], got[str(i)]["width"], got[str(i)]["objects"]) == (None, None, [])


def test_annotations_and_images_on_object_storage(s3_env):  # noqa: F811
    root = f"s3://{BUCKET}/coco"
    png = records.encode_png(np.full((4, 6, 3), 200, np.uint8))
    storage.write_bytes(f"{root}/images/a.png", png)
    storage.write_bytes(f"{root}/images/b.png", b"GIF89a truncated")
    doc = {"images": [{"id": i, "file_name": n} for i, n in enumerate(["a.png", "b.png", "c.png"])],
           "annotations": [box(1, 0, 20, [0, 0, 6, 4])], "categories": CATS}
    storage.write_json(f"{root}/annotations/instances.json", doc)
    rows = coco.load_coco(f"{root}/annotations/instances.json", None)
    got = by_id(coco.coco_batch(rows, f"{root}/images"))
    assert [got[k][STATUS] for k in "012"] == [quality.OK, quality.UNDECODABLE, quality.MISSING_IMAGE]
    assert got["0"]["image"] == png and (got["0"]["width"], got["0"]["height"], got["0"]["label"]) == (6, 4, 2)
    with pytest.raises(DataError, match=f"{root}/annotations/captions.json"):
        coco.load_coco(None, f"{root}/annotations/captions.json")


# -- round trip through the generator --------------------------------------------------------------
# Images of several sizes and aspect ratios (16-64 px on a side), as users' photographs come.
GEN_CFG = DataConfig(num_images=40, image_size=32, num_classes=5, objects_per_image=(1, 3), shard_size=15, seed=4,
                     size_range=(0.5, 2.0))


def assert_generators_records(rows: pa.Table, got: dict[str, dict], cfg: DataConfig) -> None:
    """Record ``i`` of the generator came back as COCO image ``i + 1``, exactly."""
    assert len(got) == cfg.num_images and coco.category_names(rows) == [synthetic.class_name(c) for c in range(5)]
    for i in range(cfg.num_images):
        want, r = synthetic.make_record(i, cfg), got[str(i + 1)]
        assert r[STATUS] == quality.OK
        assert rows.column("file_name")[i].as_py() == want["id"] + ".png"
        assert r["boxes"] == [{k: int(v) for k, v in b.items()} for b in want["boxes"]]
        assert r["objects"] == want["objects"] and r["caption"] == want["caption"]
        area = {b["label"]: (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in want["boxes"]}
        assert r["label"] == min(area, key=lambda c: (-area[c], c))
        assert (r["width"], r["height"]) == (want["width"], want["height"])
        assert np.array_equal(records.decode_image(r["image"]), records.decode_image(want["image"]))


def test_synthetic_coco_shards_parse_back_without_ray(tmp_path):
    images = str(tmp_path / "images")
    entries = [e for shard in range(3) for e in synth_coco.write_coco_shard(GEN_CFG, images, shard)]
    inst, caps = synth_coco.coco_documents(GEN_CFG, entries)
    assert [c["id"] for c in inst["categories"]] == [1, 3, 5, 7, 9]
    assert [a["id"] for a in inst["annotations"]] == list(range(1, len(inst["annotations"]) + 1))
    rows = coco.parse_coco(json.loads(json.dumps(inst)), json.loads(json.dumps(caps)), label_rule="largest")
    assert_generators_records(rows, by_id(coco.coco_batch(rows, images)), GEN_CFG)


def test_synthetic_coco_round_trip_on_ray(ray_local, tmp_path):
    seen = []
    info = synth_coco.write_coco(GEN_CFG, str(tmp_path / "coco"), progress=lambda *a: seen.append(a))
    assert info["records"] == 40 and info["format"] == "coco" and seen[-1] == (3, 3, 40) and len(seen) == 3
    rows = coco.load_coco(info["instances"], info["captions"], label_rule="largest")
    ds = coco.read_coco(os.path.join(info["path"], "images"), rows, rows_per_block=16)
    assert_generators_records(rows, {r["id"]: r for r in ds.take_all()}, GEN_CFG)
