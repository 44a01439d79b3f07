"""Bad input is quarantined and counted, never lost: every kind of fault planted in each input
format, then the data and splits stages; per reason, the quarantine holds exactly the planted
records, and used + quarantined = read.

Which planted record-level faults are quarantined depends on the split a record falls into (a
public record needs no boxes): the oracle is the keyed-hash split and the study kind's needs.
"""
from __future__ import annotations

import io
import os
import shlex
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import storage
from study.config_load import load_config
from study.core.splits import assign_splits
from study.data import records, synth_write, synthetic
from study.stages import data as ingest
from study.frame.context import RunContext
from study.frame.kinds import get_kind
from study.stages.splits import run_splits
from study.stages.report import quarantine_summary

N = 80
GEN = ["data.image_size=16", "data.num_classes=5", "data.objects_per_image=[1, 2]", f"data.num_images={N}",
       "data.shard_size=40", "splits.fractions={target: 0.25, reference: 0.25, public: 0.25, holdout: 0.25}"]
GEN_CFG = load_config(None, GEN).data
IDS = [synthetic.make_record(i, GEN_CFG)["id"] for i in range(N)]

# Record-level faults: (record index, column, value, reason, needed field or None = checked everywhere).
BOX = dict(label=0)
RECORD_FAULTS = [
    (10, "label", None, "missing_label", "label"),
    (11, "label", -3, "bad_label", None),
    (12, "boxes", None, "missing_boxes", "boxes"),
    (13, "boxes", [dict(x0=9.0, y0=2.0, x1=3.0, y1=8.0, **BOX)], "box_inverted", None),
    (14, "boxes", [dict(x0=4.0, y0=4.0, x1=4.0, y1=9.0, **BOX)], "box_zero_area", None),
    (15, "boxes", [dict(x0=20.0, y0=1.0, x1=30.0, y1=9.0, **BOX)], "box_outside_image", None),
    (16, "boxes", [dict(x0=0.1, y0=0.2, x1=0.5, y1=0.6, **BOX)], "box_normalised", None),
]


def record_reason_oracle(kind: str, seed: int = 0) -> dict[str, int]:
    """Per reason, how many planted record-level faults fall in a split that rejects them."""
    fractions = load_config(None, GEN).splits.fractions
    split = dict(zip(IDS, assign_splits(IDS, fractions, seed)))
    needs = get_kind(kind).needs
    out: dict[str, int] = {}
    for i, _, _, reason, field in RECORD_FAULTS:
        if field is None or field in needs.get(split[IDS[i]], ()):
            out[reason] = out.get(reason, 0) + 1
    return out


def faulty_columns() -> list[dict]:
    """The generator's records in shards, with every record-level fault and a repeated id planted;
    images of records 20 and 21 corrupt and truncated."""
    shards = [cols for _, cols in synthetic.iter_shards(GEN_CFG)]
    flat = {k: [v for s in shards for v in s[k]] for k in shards[0]}
    for i, column, value, _, _ in RECORD_FAULTS:
        flat[column][i] = value
    flat["image"][20] = b"\x89PNG not really"
    flat["image"][21] = flat["image"][21][: len(flat["image"][21]) // 2]
    flat["id"][31] = flat["id"][30]  # two records, one id: both go
    half = N // 2
    return [{k: v[:half] for k, v in flat.items()}, {k: v[half:] for k, v in flat.items()}]


def expected(kind: str, read_reasons: dict[str, int]) -> dict[str, int]:
    out = dict(read_reasons)
    for reason, n in record_reason_oracle(kind).items():
        out[reason] = out.get(reason, 0) + n
    return dict(sorted(out.items()))


def run(tmp_path, source: str, path: str, kind: str = "ssl_dejavu", objects: str | None = None,
        extra: tuple = ()) -> tuple:
    """The data and splits stages (the data stage's marker written, as the runner does)."""
    from study.frame.context import write_marker

    sets = GEN + [f"study={kind}", f"data.source={source}", f"data.path={path}", *extra]
    sets += [f"data.objects={objects}"] if objects else []
    ctx = RunContext.create(load_config(None, sets, str(tmp_path / "runs")))
    data = ingest.run_data(ctx)
    write_marker(ctx.stage_dir("data"), "test", data, 0.0)
    manifest = run_splits(ctx)
    return ctx, data, manifest, quarantine_summary(ctx, manifest)


def check_books(ctx, data, summary, read: int) -> None:
    """used + quarantined = read; the quarantine files hold one row per quarantined record."""
    assert summary["records_read"] == read
    assert summary["used"] + sum(summary["quarantined"].values()) == read
    held = pq.read_table(ctx.quarantine_dir).num_rows if storage.exists(ctx.quarantine_dir) else 0
    assert held == sum(data["quarantined"].values())


def test_record_shards_in_place(ray_local, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for k, cols in enumerate(faulty_columns()):
        records.write_shard(str(src / f"part-{k:05d}.parquet"), cols)
    records.write_shard(str(src / "part-00002.parquet"), {c: [] for c in records.RECORD_SCHEMA.names})  # empty
    ctx, data, manifest, summary = run(tmp_path, "parquet", str(src))
    assert ctx.data_root != str(src)  # faults: the usable records were copied under the run
    want = expected("ssl_dejavu", {"undecodable": 2, "duplicate_id": 2})
    assert summary["quarantined"] == want
    check_books(ctx, data, summary, N)
    # The user's files are untouched.
    assert records.dataset(str(src)).count_rows() == N


def test_img2dataset_parquet(ray_local, tmp_path):
    """Failed downloads, null and corrupt image bytes, record faults in the side table."""
    src = tmp_path / "i2d"
    synth_write.write_synthetic(GEN_CFG, "parquet", str(src))
    side = pq.read_table(src / "objects.parquet").to_pylist()
    by_key = {r["key"]: r for r in side}
    for i, column, value, _, _ in RECORD_FAULTS:
        by_key[IDS[i]][column] = value
    pq.write_table(pa.Table.from_pylist(side, schema=synth_write.SIDE_SCHEMA), src / "objects.parquet")
    table = pq.read_table(src / "00000.parquet").to_pylist()
    table[0]["status"], table[0]["jpg"] = "failed_to_download", None
    table[1]["jpg"] = b"garbage"
    table[2]["jpg"] = None
    pq.write_table(pa.Table.from_pylist(table, schema=synth_write.IMG2DATASET_SCHEMA), src / "00000.parquet")
    ctx, data, manifest, summary = run(tmp_path, "img2dataset", str(src), objects=str(src / "objects.parquet"))
    assert summary["quarantined"] == expected("ssl_dejavu", {"not_downloaded": 2, "undecodable": 1})
    check_books(ctx, data, summary, N)


def test_webdataset(ray_local, tmp_path):
    """A truncated image inside a tar, and a VLM study's needs: null captions and objects."""
    src = tmp_path / "wds"
    synth_write.write_synthetic(GEN_CFG, "webdataset", str(src))
    side = pq.read_table(src / "objects.parquet").to_pylist()
    side[5]["objects"] = None
    pq.write_table(pa.Table.from_pylist(side, schema=synth_write.SIDE_SCHEMA), src / "objects.parquet")
    shard = src / "00001.tar"
    out = io.BytesIO()
    with tarfile.open(shard) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            if member.name == f"{IDS[41]}.jpg":
                data = data[: len(data) // 3]
            if member.name == f"{IDS[42]}.txt":
                data = b"   "
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())
    ctx, data, manifest, summary = run(tmp_path, "webdataset", str(src), kind="vlm_dejavu",
                                       objects=str(src / "objects.parquet"))
    fractions = load_config(None, GEN).splits.fractions
    split = dict(zip(IDS, assign_splits(IDS, fractions, 0)))
    needs = get_kind("vlm_dejavu").needs
    want = {"undecodable": 1}
    for i, field, reason in ((5, "objects", "missing_objects"), (42, "caption", "missing_caption")):
        if field in needs.get(split[IDS[i]], ()):
            want[reason] = want.get(reason, 0) + 1
    assert summary["quarantined"] == dict(sorted(want.items()))
    check_books(ctx, data, summary, N)
    assert os.path.isdir(ctx.quarantine_dir)


def test_coco(ray_local, tmp_path):
    """Missing, unreadable and corrupt image files; boxes inverted, empty or outside the image;
    an image annotated with nothing (no label follows, so an SSL study cannot use it)."""
    import json

    from study.data.synth_coco import write_coco

    out = write_coco(GEN_CFG, str(tmp_path / "coco"))
    images = tmp_path / "coco" / "images"
    os.remove(images / f"{IDS[3]}.png")  # COCO image id 4
    (images / f"{IDS[4]}.png").write_bytes(b"GIF89a nonsense")
    os.remove(images / f"{IDS[5]}.png")
    os.mkdir(images / f"{IDS[5]}.png")  # a folder where the file should be
    doc = json.loads(open(out["instances"]).read())
    first_ann = {}
    for a in doc["annotations"]:
        first_ann.setdefault(a["image_id"], a)
    first_ann[11]["bbox"] = [9.0, 2.0, -6.0, 6.0]  # inverted (negative width)
    first_ann[12]["bbox"] = [4.0, 4.0, 0.0, 5.0]  # zero area
    first_ann[13]["bbox"] = [40.0, 1.0, 8.0, 8.0]  # outside a 16-px image
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 14]  # image 14: nothing annotated
    open(out["instances"], "w").write(json.dumps(doc))
    sets = (f"data.coco.instances={out['instances']}", f"data.coco.captions={out['captions']}")
    ctx, data, manifest, summary = run(tmp_path, "coco", str(images), extra=sets)
    coco_ids = [str(i + 1) for i in range(N)]
    split = dict(zip(coco_ids, assign_splits(coco_ids, load_config(None, GEN).splits.fractions, 0)))
    want = {"missing_image": 1, "undecodable": 1, "unreadable": 1, "box_inverted": 1, "box_zero_area": 1,
            "box_outside_image": 1}
    if split["14"] in get_kind("ssl_dejavu").needs:
        want["missing_label"] = 1
    assert summary["quarantined"] == dict(sorted(want.items()))
    check_books(ctx, data, summary, N)
    assert data["label_names"] == [synthetic.class_name(c) for c in range(GEN_CFG.num_classes)]


def test_voc_folders(ray_local, tmp_path):
    """Class folders with VOC XML: a missing XML (no boxes: the attacked splits cannot use it), a
    malformed XML, a corrupt image, an XML box outside the image."""
    from study.data.synth_voc import write_voc

    out = write_voc(GEN_CFG, str(tmp_path / "voc"))
    xml = {p.stem: p for p in (tmp_path / "voc" / "Annotation").rglob("*.xml")}
    img = {p.stem: p for p in (tmp_path / "voc" / "images").rglob("*.png")}
    os.remove(xml[IDS[2]])
    xml[IDS[3]].write_text("<annotation><object>")
    img[IDS[4]].write_bytes(img[IDS[4]].read_bytes()[:40])
    text = xml[IDS[6]].read_text()
    start = text.index("<xmin>") + len("<xmin>")
    text = text[:start] + "40" + text[text.index("</xmin>"):]
    end = text.index("<xmax>") + len("<xmax>")
    xml[IDS[6]].write_text(text[:end] + "48" + text[text.index("</xmax>"):])
    ctx, data, manifest, summary = run(tmp_path, "voc", out["path"], extra=(f"data.voc.annotations={out['annotations']}",))
    split = dict(zip(IDS, assign_splits(IDS, load_config(None, GEN).splits.fractions, 0)))
    want = {"bad_annotation": 1, "undecodable": 1, "box_outside_image": 1}
    if "boxes" in get_kind("ssl_dejavu").needs.get(split[IDS[2]], ()):
        want["missing_boxes"] = 1
    assert summary["quarantined"] == dict(sorted(want.items()))
    check_books(ctx, data, summary, N)


@pytest.mark.parametrize("fmt", ["coco", "voc", "hf"])
def test_synth_cli_writes_a_layout_its_printed_flags_read(ray_local, tmp_path, capsys, fmt):
    from study.cli import main

    out = tmp_path / fmt
    assert main(["data", "synth", "--format", fmt, "--num", "12", "--output", str(out), "--set", "data.image_size=16"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("use them with:")][0]
    words = shlex.split(line.split(":", 1)[1])
    cfg = load_config(None, words[1::2])
    assert cfg.data.source == fmt
    columns = ingest.SOURCES[fmt].columns(cfg.data)
    assert {"label", "boxes", "objects"} <= columns
    if fmt != "hf":  # a saved Hugging Face dataset keeps its images inside its Arrow files
        assert len(list((tmp_path / fmt).rglob("*.png"))) == 12


def test_hugging_face_dataset(ray_local, tmp_path):
    """A saved Hugging Face dataset with a corrupt image, boxes in another split's needs, a -1
    ("no label") class label: the quarantine per reason, through the mapping."""
    import datasets

    from study.data.synth_hf import write_hf

    write_hf(GEN_CFG, str(tmp_path / "hf"), "disk")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    rows = ds.to_dict()
    rows["image"][7] = {"bytes": b"not an image", "path": None}
    rows["label"][8] = -1
    rows["boxes"][9] = [[9.0, 2.0, 3.0, 8.0]]  # inverted
    rows["box_labels"][9] = [0]
    datasets.Dataset.from_dict(rows, features=ds.features).save_to_disk(str(tmp_path / "hf2"))
    cols = "data.hf.columns={objects: objects, boxes: boxes, box_labels: box_labels}"
    ctx, data, manifest, summary = run(tmp_path, "hf", str(tmp_path / "hf2"), extra=(cols,))
    split = dict(zip(IDS, assign_splits(IDS, load_config(None, GEN).splits.fractions, 0)))
    want = {"undecodable": 1, "box_inverted": 1}
    if "label" in get_kind("ssl_dejavu").needs.get(split[IDS[8]], ()):
        want["missing_label"] = 1
    assert summary["quarantined"] == dict(sorted(want.items()))
    check_books(ctx, data, summary, N)


def test_damaged_tars_lose_only_what_is_damaged(ray_local, tmp_path):
    """A shard that is not a tar, and one cut short in the middle of a member: the samples read
    before the damage are used, the damaged member and the damaged shards are quarantined."""
    src = tmp_path / "wds"
    synth_write.write_synthetic(GEN_CFG, "webdataset", str(src))
    (src / "00000.tar").write_bytes(b"garbage!" * 100)
    whole = (src / "00001.tar").read_bytes()
    with tarfile.open(src / "00001.tar") as tar:
        members = tar.getmembers()
    cut = members[9]  # the fourth sample's image (three members per sample)
    (src / "00001.tar").write_bytes(whole[: cut.offset_data + cut.size // 2])
    sets = GEN + ["study=vlm_dejavu", "data.source=webdataset", f"data.path={src}", f"data.objects={src}/objects.parquet"]
    ctx = RunContext.create(load_config(None, sets, str(tmp_path / "runs")))
    data = ingest.run_data(ctx)  # three records are too few for the splits: the data stage alone
    held = {r["id"]: r["reason"] for r in pq.read_table(ctx.quarantine_dir).to_pylist()}
    assert held == {"file:00000.tar": "unreadable", "file:00001.tar": "unreadable", IDS[43]: "unreadable"}
    assert (data["records"], data["records_read"]) == (3, 6)  # the three samples of 00001.tar before the cut
    assert sorted(records.dataset(ctx.data_root).to_table(columns=["id"]).column("id").to_pylist()) == IDS[40:43]
