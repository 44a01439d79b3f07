"""Pascal-VOC inputs: XML parsing on hand-written annotations, the per-batch reader on class folders
with broken files (locally and on object storage), and a round trip through the synthetic generator
written as ImageNet-style folders.

The round trip's oracle is the generator itself: ids, labels, boxes, objects and pixels must come
back exactly.
"""
from __future__ import annotations

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
from study.data import records, synth_voc, synthetic, voc
from study.data.records import STATUS
from study.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = {"n01": 0, "n02": 1}


def annotation(*objects: tuple[str, tuple], size: tuple | None = (10, 8)) -> str:
    """VOC XML of (name, (xmin, ymin, xmax, ymax)) objects."""
    parts = [f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""]
    for name, corners in objects:
        box = "".join(f"<{t}>{v}</{t}>" for t, v in zip(voc.CORNERS, corners))
        parts.append(f"<object><name>{name}</name><difficult>1</difficult><bndbox>{box}</bndbox></object>")
    return f"<?xml version='1.0' encoding='utf-8'?><annotation><filename>x</filename>{''.join(parts)}</annotation>"


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["id"]: r for r in table.to_pylist()}


# -- parsing --------------------------------------------------------------------------------------
def test_corners_become_half_open_zero_based_boxes():
    boxes, size = voc.parse_voc_xml(annotation(("n02", (1, 1, 10, 8)), ("n01", (3, 2, 4.5, 6))), CLASSES)
    assert boxes == [{"x0": 0, "y0": 0, "x1": 10, "y1": 8, "label": 1},  # the whole 10 x 8 image
                     {"x0": 2, "y0": 1, "x1": 4.5, "y1": 6, "label": 0}]
    assert size == (10, 8)
    objects, _ = voc.voc_objects(annotation(("n02", (5, 5, 5, 5))).encode())  # bytes too
    assert objects == [("n02", {"x0": 4, "y0": 4, "x1": 5, "y1": 5})]  # a one-pixel box has area 1


def test_unknown_names_are_boxes_labelled_minus_one_and_sizes_are_optional():
    boxes, size = voc.parse_voc_xml(annotation(("dog", (1, 1, 2, 2)), size=None), CLASSES)
    assert boxes == [{"x0": 0, "y0": 0, "x1": 2, "y1": 2, "label": -1}] and size is None
    assert voc.parse_voc_xml(annotation(), CLASSES) == ([], (10, 8))


@pytest.mark.parametrize("text", [
    "<annotation><object>",  # truncated
    "not xml at all",
    "<voc></voc>",  # parses, but is no VOC annotation
    annotation(("n01", (1, 1, "wide", 2))),
    annotation(("n01", (1, 1, "", 2))),
    "<annotation><object><name>n01</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
    "<annotation><object><name>n01</name></object></annotation>",
    annotation(("", (1, 1, 2, 2))),  # an object without a name
    annotation(size=("ten", 8)),
])
def test_malformed_annotations_raise_value_error(text):
    with pytest.raises(ValueError):
        voc.parse_voc_xml(text, CLASSES)


def test_parsing_and_reading_load_no_ray():
    code = "import sys, study.data.voc; print(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# -- listing and reading --------------------------------------------------------------------------
PIXELS = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)


def write_folders(images: str, annotations: str) -> None:
    """Class n01: a good image with boxes, one without XML, a corrupt one, one with broken XML;
    class n02: an image whose XML has no objects. Files beside them that the reader must skip."""
    png = records.encode_png(PIXELS)
    files = {
        f"{images}/n01/n01_1.png": png, f"{annotations}/n01/n01_1.xml": annotation(
            ("n02", (2, 1, 7, 5)), ("n01", (1, 1, 3, 3)), ("n02", (1, 1, 1, 1)), ("cat", (1, 1, 2, 2))).encode(),
        f"{images}/n01/n01_2.JPEG": png,
        f"{images}/n01/n01_3.jpg": png[: len(png) // 2], f"{annotations}/n01/n01_3.xml": annotation().encode(),
        f"{images}/n01/n01_4.PNG": png, f"{annotations}/n01/n01_4.xml": b"<annotation><size>",
        f"{images}/n01/notes.txt": b"not an image", f"{images}/n01/.n01_5.png": png,
        f"{images}/n02/n02_1.png": png, f"{annotations}/n02/n02_1.xml": annotation().encode(),
        f"{images}/readme.png": png, f"{images}/_skipped/x.png": png,
    }
    for uri, data in files.items():
        storage.write_bytes(uri, data)


def listed(images: str) -> pa.Table:
    index = {w: i for i, w in enumerate(voc.list_classes(images))}
    rows = [r for w in index for r in voc.class_files({"wnid": w}, images, index)]
    # The only file the listing cannot know is absent: as if deleted between listing and reading.
    rows.append({"id": "n02_9", "wnid": "n02", "label": 1, "path": storage.join(images, "n02", "n02_9.png")})
    return pa.Table.from_pylist(rows)


def check_batch(out: pa.Table, images: str) -> None:
    assert out.schema.names == records.RECORD_SCHEMA.names + [STATUS]
    assert out.select(records.RECORD_SCHEMA.names).schema == records.RECORD_SCHEMA
    got = by_id(out)
    assert list(got) == ["n01_1", "n01_2", "n01_3", "n01_4", "n02_1", "n02_9"]
    assert {k: r[STATUS] for k, r in got.items()} == {
        "n01_1": quality.OK, "n01_2": quality.OK, "n01_3": quality.UNDECODABLE,
        "n01_4": quality.BAD_ANNOTATION, "n02_1": quality.OK, "n02_9": quality.MISSING_IMAGE}
    good = got["n01_1"]
    assert (good["width"], good["height"], good["label"], good["caption"]) == (7, 5, 0, None)
    assert np.array_equal(records.decode_image(good["image"]), PIXELS)
    corners = [(b["x0"], b["y0"], b["x1"], b["y1"], b["label"]) for b in good["boxes"]]
    assert corners == [(1, 0, 7, 5, 1), (0, 0, 3, 3, 0), (0, 0, 1, 1, 1), (0, 0, 2, 2, -1)]
    assert good["objects"] == ["cat", "n01", "n02"]
    no_xml = got["n01_2"]
    assert (no_xml["boxes"], no_xml["objects"], no_xml["label"], no_xml["width"]) == (None, None, 0, 7)
    assert (got["n02_1"]["boxes"], got["n02_1"]["objects"], got["n02_1"]["label"]) == ([], [], 1)
    assert (got["n01_4"]["boxes"], got["n01_4"]["objects"]) == (None, None)
    for k in ("n01_3", "n02_9"):
        assert (got[k]["image"], got[k]["width"], got[k]["height"]) == (None, None, None)


def test_voc_batch_reads_images_and_annotations_and_marks_the_bad_ones(tmp_path):
    images, annotations = str(tmp_path / "train"), str(tmp_path / "Annotation")
    write_folders(images, annotations)
    (tmp_path / "train" / "n01" / "n01_6.png").mkdir()  # a folder named like an image is no image
    rows = listed(images)
    assert voc.label_names(images) == ["n01", "n02"]
    check_batch(voc.voc_batch(rows, annotations, CLASSES), images)
    without = by_id(voc.voc_batch(rows, None, CLASSES))
    assert all(r["boxes"] is None and r["objects"] is None for r in without.values())
    assert without["n01_4"][STATUS] == quality.OK  # no annotations asked for, none read


def test_voc_batch_on_object_storage(s3_env):  # noqa: F811
    images, annotations = f"s3://{BUCKET}/voc/train", f"s3://{BUCKET}/voc/Annotation"
    write_folders(images, annotations)
    rows = listed(images)
    assert rows.column("path")[0].as_py() == f"{images}/n01/n01_1.png"
    check_batch(voc.voc_batch(rows, annotations, CLASSES), images)


def test_listing_errors_and_fingerprint(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        voc.list_classes(str(tmp_path / "absent"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=f"no class folders under {tmp_path / 'flat'}"):
        voc.list_classes(str(tmp_path / "flat"))
    images, annotations = str(tmp_path / "train"), str(tmp_path / "Annotation")
    write_folders(images, annotations)
    before = voc.fingerprint(images, annotations)
    assert [row[:3] for row in before] == [["n01", 4, 3], ["n02", 1, 1]]
    (tmp_path / "Annotation" / "n02" / "n02_1.xml").write_text(annotation(("n02", (1, 1, 2, 2))))
    after = voc.fingerprint(images, annotations)
    assert after[0] == before[0] and after[1] != before[1]


# -- round trip through the generator --------------------------------------------------------------
# Images of several sizes and aspect ratios (16-64 px on a side), as users' photographs come.
GEN_CFG = DataConfig(num_images=40, image_size=32, num_classes=5, objects_per_image=(1, 3), shard_size=15, seed=4,
                     size_range=(0.5, 2.0))


def test_class_folders_sort_in_label_order():
    for n in (5, 10, 11, 100):
        folders = [synth_voc.class_folder(c, n) for c in range(n)]
        assert sorted(folders) == folders and len(set(folders)) == n


def test_synthetic_voc_round_trip_on_ray(ray_local, tmp_path):
    seen = []
    info = synth_voc.write_voc(GEN_CFG, str(tmp_path / "voc"), progress=lambda *a: seen.append(a))
    assert (info["format"], info["records"], seen[-1], len(seen)) == ("voc", 40, (3, 3, 40), 3)
    folders = [synth_voc.class_folder(c, 5) for c in range(5)]
    assert voc.label_names(info["path"]) == folders
    got = {r["id"]: r for r in voc.read_voc(info["path"], info["annotations"], rows_per_batch=8).take_all()}
    assert len(got) == GEN_CFG.num_images
    for i in range(GEN_CFG.num_images):
        want = synthetic.make_record(i, GEN_CFG)
        r = got[want["id"]]
        assert r[STATUS] == quality.OK and r["label"] == want["label"] and r["caption"] is None
        assert r["boxes"] == [{k: int(v) for k, v in b.items()} for b in want["boxes"]]
        assert r["objects"] == sorted(folders[b["label"]] for b in want["boxes"])
        assert (r["width"], r["height"]) == (want["width"], want["height"])
        assert r["image"] == want["image"]  # the generator's PNG bytes, so the pixels too
