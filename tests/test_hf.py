"""Hugging Face datasets as an input: the per-batch mapping on hand-built tables (every image form,
broken images, box formats, mapping errors), layout detection and split selection on small saved
datasets, the part readers without Ray, and round trips through the synthetic generator on Ray.

The round trips' oracle is the generator itself: ids, labels, captions, objects, boxes and pixels
must come back exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import pytest
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server fixture)

from study import storage
from study.config import DataConfig
from study.core import quality
from study.data import hf, hf_layouts, hf_read, records, synth_hf, synthetic
from study.data.records import STATUS
from study.errors import ConfigError, DataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import datasets  # noqa: E402  (after the offline switches)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXELS = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
PNG = records.encode_png(PIXELS)
# Images of several sizes and aspect ratios (8-32 px on a side), as users' photographs come.
GEN_CFG = DataConfig(num_images=40, image_size=16, num_classes=5, objects_per_image=(1, 3), shard_size=15, seed=4,
                     size_range=(0.5, 2.0))


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["id"]: r for r in table.to_pylist()}


# -- the per-batch mapping ------------------------------------------------------------------------
def test_image_structs_bytes_and_paths_with_their_read_status(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "folder.png").mkdir()
    structs = [{"bytes": PNG, "path": "ignored.png"}, {"bytes": None, "path": str(tmp_path / "a.png")},
               {"bytes": None, "path": str(tmp_path / "absent.png")}, {"bytes": None, "path": None},
               {"bytes": PNG[: len(PNG) // 2], "path": None}, None,
               {"bytes": None, "path": str(tmp_path / "folder.png")}]
    table = pa.table({"id": list(range(7)), "image": structs, "text": ["a", "b", None, "d", "e", "f", "g"],
                      "label": [0, -1, 2, 3, 4, 5, 6]})
    out = hf.hf_batch(table, {})
    assert out.schema.names == records.RECORD_SCHEMA.names + [STATUS]
    assert out.select(records.RECORD_SCHEMA.names).schema == records.RECORD_SCHEMA
    got = by_id(out)
    assert [r[STATUS] for r in got.values()] == [
        quality.OK, quality.OK, quality.MISSING_IMAGE, quality.MISSING_IMAGE, quality.UNDECODABLE,
        quality.MISSING_IMAGE, quality.UNREADABLE]
    for k in ("0", "1"):
        assert np.array_equal(records.decode_image(got[k]["image"]), PIXELS)
        assert (got[k]["width"], got[k]["height"]) == (7, 5)
    assert all(r["image"] is None and r["width"] is None for k, r in got.items() if k not in ("0", "1"))
    assert [r["label"] for r in got.values()] == [0, None, 2, 3, 4, 5, 6]  # -1: ClassLabel's "no label"
    assert [r["caption"] for r in got.values()][:3] == ["a", "b", None]  # guessed from "text"
    assert all(r["boxes"] is None and r["objects"] is None for r in got.values())


def test_raw_bytes_and_path_columns(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    raw = hf.hf_batch(pa.table({"id": ["x", "y"], "img": pa.array([PNG, b"not an image"], pa.binary())}), {})
    assert [r[STATUS] for r in raw.to_pylist()] == [quality.OK, quality.UNDECODABLE]
    paths = pa.table({"key": ["p", "q"], "file": [str(tmp_path / "a.png"), str(tmp_path / "b.png")]})
    out = hf.hf_batch(paths, {"id": "key", "image": "file"})
    assert [(r["id"], r[STATUS], r["width"]) for r in out.to_pylist()] == [
        ("p", quality.OK, 7), ("q", quality.MISSING_IMAGE, None)]
    assert out.column("image")[0].as_py() == PNG


def test_boxes_in_both_formats_with_their_labels():
    box_rows = [[[1, 2, 3, 4], [0, 0, 7, 5]], [], None, [[1, 2, 3]], [[1, 1, 2, 2]], [[1, 1, 2, 2]]]
    labels = [[3, None], [], None, [0], None, [0, 1]]
    table = pa.table({"id": list("abcdef"), "image": pa.array([PNG] * 5 + [b"bad"], pa.binary()),
                      "bb": box_rows, "bl": labels, "objects": [["cat"], [], None, None, None, None]})
    got = by_id(hf.hf_batch(table, {"boxes": "bb", "box_labels": "bl", "objects": "objects"}, "xywh"))
    assert got["a"]["boxes"] == [{"x0": 1, "y0": 2, "x1": 4, "y1": 6, "label": 3},
                                 {"x0": 0, "y0": 0, "x1": 7, "y1": 5, "label": -1}]
    assert (got["b"]["boxes"], got["c"]["boxes"], got["a"]["objects"], got["c"]["objects"]) == ([], None, ["cat"], None)
    assert [got[k][STATUS] for k in "abcdef"] == [quality.OK, quality.OK, quality.OK, quality.BAD_ANNOTATION,
                                                  quality.OK, quality.UNDECODABLE]  # the image comes first
    assert got["e"]["boxes"] == [{"x0": 1, "y0": 1, "x1": 3, "y1": 3, "label": -1}]  # no labels: -1
    xyxy = by_id(hf.hf_batch(table.slice(0, 1), {"boxes": "bb"}))
    assert xyxy["a"]["boxes"][0] == {"x0": 1, "y0": 2, "x1": 3, "y1": 4, "label": -1}
    structs = pa.table({"id": ["s"], "image": pa.array([PNG], pa.binary()),
                        "boxes": pa.array([[{"x0": 1, "y0": 1, "x1": 2, "y1": 2, "label": 4}]],
                                          pa.list_(records.BOX_TYPE))})
    assert by_id(hf.hf_batch(structs, {"boxes": "boxes"}, "xywh"))["s"]["boxes"][0]["x1"] == 2  # structs are xyxy


def test_dotted_names_reach_into_detection_objects():
    """The Hub's detection sets hold boxes as a struct of lists (``Sequence``) or a list of structs."""
    for objects in ([{"bbox": [[1, 1, 2, 2]], "category": [3]}],
                    [[{"bbox": [1, 1, 2, 2], "category": 3}]]):
        table = pa.table({"id": ["d"], "image": pa.array([PNG], pa.binary()), "objects": objects})
        out = hf.hf_batch(table, {"boxes": "objects.bbox", "box_labels": "objects.category"}, "xywh")
        assert out.column("boxes").to_pylist() == [[{"x0": 1, "y0": 1, "x1": 3, "y1": 3, "label": 3}]]
    assert hf.column_type(table.schema, "objects.nothing") is None


def test_mapping_errors_name_the_column_and_list_the_dataset_columns():
    table = pa.table({"id": ["a"], "image": pa.array([PNG], pa.binary()), "caption": [1.5]})
    lacks = r"names column 'words', which the dataset lacks; its columns: \['id', 'image', 'caption'\]"
    with pytest.raises(DataError, match=lacks):
        hf.hf_batch(table, {"caption": "words"})
    with pytest.raises(DataError, match=r"column 'caption' \(double\) cannot be the record's caption"):
        hf.hf_batch(table, {"caption": "caption"})
    assert hf.resolve(table.schema, {}) == {"id": "id", "image": "image"}  # a guess that does not fit is passed over
    labelled = pa.table({"id": ["a"], "image": [PNG], "label": [3]})
    assert hf.hf_batch(labelled, {"label": ""}).column("label").to_pylist() == [None]  # "": no column, no guess
    with pytest.raises(DataError, match=r"no usable image column \(tried \['image', 'img'\]\)"):
        hf.hf_batch(pa.table({"id": ["a"], "picture": [PNG]}), {})
    with pytest.raises(DataError, match="null ids"):
        hf.hf_batch(pa.table({"id": ["a", None], "image": [PNG, PNG]}), {})
    keyed = hf.hf_batch(pa.table({"image": [PNG], hf.KEY: ["7"]}), {})  # no id column: the row's key
    assert keyed.column("id").to_pylist() == ["7"]
    for bad in ({"format": "tfds"}, {"columns": {"picture": "img"}}, {"box_format": "cxcywh"}):
        with pytest.raises(ConfigError, match="data.hf."):
            hf.HfConfig(**bad)


def test_importing_the_reader_loads_neither_ray_nor_datasets():
    code = "import sys, study.data.hf_read; print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'datasets'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# -- layouts and splits ---------------------------------------------------------------------------
def small(n: int, offset: int = 0, with_id: bool = True) -> datasets.Dataset:
    cols = {"image": [{"bytes": PNG, "path": None}] * n, "label": [(i + offset) % 2 for i in range(n)]}
    feats = {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}
    if with_id:
        cols, feats = {"id": [f"r{i + offset}" for i in range(n)], **cols}, {"id": datasets.Value("string"), **feats}
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def test_disk_layouts_and_split_selection(tmp_path):
    datasets.DatasetDict({"train": small(3), "test": small(2, offset=10)}).save_to_disk(str(tmp_path / "dict"))
    small(4).save_to_disk(str(tmp_path / "one"))
    assert hf_layouts.detect(str(tmp_path / "dict")) == hf_layouts.detect(str(tmp_path / "one")) == "disk"
    test = hf_layouts.describe(str(tmp_path / "dict"), hf.HfConfig(split="test"))
    assert (test.rows, test.root, test.class_names) == (2, str(tmp_path / "dict" / "test"), {"label": ["cat", "dog"]})
    assert hf_layouts.describe(str(tmp_path / "one"), hf.HfConfig()).rows == 4
    with pytest.raises(DataError, match=r"holds splits \['train', 'test'\], not 'validation'"):
        hf_layouts.describe(str(tmp_path / "dict"), hf.HfConfig(split="validation"))
    with pytest.raises(DataError, match="reads local folders only"):
        hf_layouts.describe_disk("s3://bucket/ds", "train")
    with pytest.raises(DataError, match="does not exist"):
        hf_layouts.describe(str(tmp_path / "absent"), hf.HfConfig())
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot tell the layout"):
        hf_layouts.detect(str(tmp_path / "empty"))


def test_disk_rows_are_read_by_range_with_row_index_ids(tmp_path):
    small(5, with_id=False).save_to_disk(str(tmp_path / "ds"))
    cfg = hf.HfConfig()
    mapping = hf.resolve(hf_layouts.describe(str(tmp_path / "ds"), cfg).schema, cfg.columns)
    assert mapping == {"id": hf.KEY, "image": "image", "label": "label"}
    parts = pa.table({"start": [1, 4], "stop": [3, 5]})
    out = pa.concat_tables(hf_read.disk_batch(parts, str(tmp_path / "ds"), mapping, "xyxy"))
    assert out.column("id").to_pylist() == ["1", "2", "4"] and out.column("label").to_pylist() == [1, 0, 0]
    assert hf_read.columns_filled(str(tmp_path / "ds"), cfg) == {"id", "image", "width", "height", "label"}


def test_parquet_splits_by_the_hubs_file_names_and_row_groups_number_rows(tmp_path):
    small(5, with_id=False).to_parquet(str(tmp_path / "data" / "train-00000-of-00002.parquet"), batch_size=2)
    small(3, with_id=False).to_parquet(str(tmp_path / "data" / "train-00001-of-00002.parquet"))
    small(2, offset=1).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    assert hf_layouts.detect(str(tmp_path)) == "parquet"
    train = hf_layouts.describe(str(tmp_path), hf.HfConfig())
    assert [os.path.basename(f) for f in train.files] == [f"train-0000{i}-of-00002.parquet" for i in (0, 1)]
    assert train.class_names == {"label": ["cat", "dog"]}  # the features ride in the Parquet metadata
    parts, rows = hf_read.parquet_parts(train.files)
    assert rows == 8 and [p["start"] for p in parts] == [0, 2, 4, 5]
    mapping = hf.resolve(train.schema, {})
    out = pa.concat_tables(hf_read.parquet_batch(pa.Table.from_pylist(parts), ["image", "label"], mapping, "xyxy"))
    assert out.column("id").to_pylist() == [str(i) for i in range(8)]
    assert len(hf_layouts.describe(str(tmp_path), hf.HfConfig(split="test")).files) == 1
    with pytest.raises(DataError, match=r"no Parquet files of split 'validation' .* its splits: \['test', 'train'\]"):
        hf_layouts.describe(str(tmp_path), hf.HfConfig(split="validation"))
    before = hf_read.fingerprint(str(tmp_path), hf.HfConfig())
    small(4).to_parquet(str(tmp_path / "data" / "train-00001-of-00002.parquet"))
    assert hf_read.fingerprint(str(tmp_path), hf.HfConfig()) != before


def write_folders(root) -> None:
    """Split folders; in train two class folders (a good image, a corrupt one), a loose image and a
    file that is not an image."""
    for rel, data in {"train/cat/1.png": PNG, "train/cat/2.png": PNG[:20], "train/dog/3.png": PNG,
                      "train/4.png": PNG, "train/notes.txt": b"x", "test/cat/5.png": PNG}.items():
        storage.write_bytes(os.path.join(root, rel), data)


def test_imagefolder_splits_class_folders_and_listing(tmp_path):
    write_folders(str(tmp_path))
    assert hf_layouts.detect(str(tmp_path)) == "imagefolder"
    train = hf_layouts.describe(str(tmp_path), hf.HfConfig())
    assert (train.root, train.classes, train.loose, train.metadata) == (
        str(tmp_path / "train"), ("cat", "dog"), True, None)
    assert hf_layouts.describe(str(tmp_path), hf.HfConfig(split="test")).classes == ("cat",)
    with pytest.raises(DataError, match=r"no split folder for 'validation' .* its split folders: \['test', 'train'\]"):
        hf_layouts.describe(str(tmp_path), hf.HfConfig(split="validation"))
    rows = [r for i, c in enumerate(train.classes) for r in hf_read.folder_files({"folder": c, "label": i}, train.root)]
    rows += hf_read.folder_files({"folder": "", "label": None}, train.root)
    got = by_id(hf.hf_batch(pa.Table.from_pylist(rows), hf.resolve(train.schema, {})))
    assert {k: (r["label"], r[STATUS]) for k, r in got.items()} == {
        "cat/1.png": (0, quality.OK), "cat/2.png": (0, quality.UNDECODABLE), "dog/3.png": (1, quality.OK),
        "4.png": (None, quality.OK)}


def test_imagefolder_metadata_names_the_records(tmp_path):
    write_folders(str(tmp_path))
    lines = ['{"file_name": "cat/1.png", "caption": "a cat"}', '{"file_name": "dog/9.png", "caption": "gone"}',
             '{"file_name": "../../etc/passwd", "caption": "outside"}', '{"file_name": "4.png", "caption": null}']
    (tmp_path / "train" / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "test" / "metadata.csv").write_text("file_name,caption,label\ncat/5.png,a cat,0\n")
    test = hf_layouts.describe(str(tmp_path), hf.HfConfig(split="test"))
    assert test.schema.names == ["image", "caption", "label", hf.KEY]
    split = hf_layouts.describe(str(tmp_path), hf.HfConfig())
    assert split.metadata == str(tmp_path / "train" / "metadata.jsonl")
    filled = hf_read.columns_filled(str(tmp_path), hf.HfConfig())
    assert filled == {"id", "image", "width", "height", "label", "caption"}
    mapping = hf.resolve(split.schema, {})
    meta = pajson.read_json(pa.BufferReader((tmp_path / "train" / "metadata.jsonl").read_bytes()))
    got = by_id(hf_read.metadata_batch(meta, split.root, split.classes, mapping, "xyxy"))
    assert {k: (r["label"], r["caption"], r[STATUS]) for k, r in got.items()} == {
        "cat/1.png": (0, "a cat", quality.OK), "dog/9.png": (1, "gone", quality.MISSING_IMAGE),
        "../../etc/passwd": (None, "outside", quality.MISSING_IMAGE), "4.png": (None, None, quality.OK)}


def test_parquet_on_object_storage(s3_env):  # noqa: F811
    uri = f"s3://{BUCKET}/hf/parquet"
    synth_hf.write_hf(GEN_CFG, uri, "parquet")
    split = hf_layouts.describe(uri, hf.HfConfig())
    assert split.files == (f"{uri}/data/train-00000-of-00001.parquet",)
    parts, rows = hf_read.parquet_parts(split.files)
    mapping = hf.resolve(split.schema, {})
    out = pa.concat_tables(hf_read.parquet_batch(pa.Table.from_pylist(parts), None, mapping, "xyxy"))
    assert rows == out.num_rows == GEN_CFG.num_images and set(out.column(STATUS).to_pylist()) == {quality.OK}


def test_imagefolder_on_object_storage(s3_env):  # noqa: F811
    uri = f"s3://{BUCKET}/hf/imagefolder"
    synth_hf.write_hf(GEN_CFG, uri, "imagefolder")
    assert hf_layouts.detect(uri) == "imagefolder"
    split = hf_layouts.describe(uri, hf.HfConfig())
    assert (split.metadata, len(split.classes)) == (f"{uri}/metadata.jsonl", 5)
    rows = hf_read.folder_files({"folder": split.classes[0], "label": 0}, split.root)
    assert rows and all(r["image"].startswith(f"{uri}/{split.classes[0]}/") for r in rows)
    meta = pajson.read_json(pa.BufferReader(storage.read_bytes(split.metadata)))
    out = hf_read.metadata_batch(meta, split.root, split.classes, hf.resolve(split.schema, {}), "xyxy")
    want = synthetic.make_record(0, GEN_CFG)
    assert out.num_rows == GEN_CFG.num_images and set(out.column(STATUS).to_pylist()) == {quality.OK}
    assert (out.column("id")[0].as_py(), out.column("image")[0].as_py()) == (want["id"], want["image"])


# -- round trips through the generator on Ray ------------------------------------------------------
def check_round_trip(ds, info: dict) -> None:
    assert info["label_names"] in ([synthetic.class_name(c) for c in range(5)],
                                   [f"{c}-{synthetic.class_name(c)}" for c in range(5)])
    got = {r["id"]: r for r in ds.take_all()}
    assert len(got) == GEN_CFG.num_images
    for i in range(GEN_CFG.num_images):
        want = synthetic.make_record(i, GEN_CFG)
        r = got[want["id"]]
        assert r[STATUS] == quality.OK and r["label"] == want["label"] and r["caption"] == want["caption"]
        assert r["boxes"] == [{k: int(v) for k, v in b.items()} for b in want["boxes"]]
        assert r["objects"] == want["objects"]
        assert (r["width"], r["height"]) == (want["width"], want["height"])
        assert r["image"] == want["image"]  # the generator's PNG bytes, so the pixels too


MAPPED = hf.HfConfig(columns={"objects": "objects", "boxes": "boxes", "box_labels": "box_labels"})


@pytest.mark.parametrize("layout", ["disk", "parquet", "imagefolder"])
def test_synthetic_round_trip_on_ray(ray_local, tmp_path, layout):
    info = synth_hf.write_hf(GEN_CFG, str(tmp_path / layout), layout)
    ds, read = hf_read.read_hf(info["path"], MAPPED)
    assert (read["layout"], read["rows"]) == (layout, None if layout == "imagefolder" else GEN_CFG.num_images)
    assert read["mapping"]["id"] == "id" and read["mapping"]["boxes"] == "boxes"
    check_round_trip(ds, read)


def test_imagefolder_without_metadata_on_ray(ray_local, tmp_path):
    write_folders(str(tmp_path))
    ds, info = hf_read.read_hf(str(tmp_path), hf.HfConfig())
    assert (info["layout"], info["label_names"], info["columns"]) == ("imagefolder", ["cat", "dog"], ["image", "label"])
    assert {r["id"]: (r["label"], r[STATUS]) for r in ds.take_all()} == {
        "cat/1.png": (0, quality.OK), "cat/2.png": (0, quality.UNDECODABLE), "dog/3.png": (1, quality.OK),
        "4.png": (None, quality.OK)}
