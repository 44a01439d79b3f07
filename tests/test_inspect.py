"""``dejavu data inspect``: the per-batch statistics on a hand-built table (numbers worked out by
hand), their merge (partial counts in any grouping add up to the whole), and the command on
synthetic record shards (counts against the generator, the page's montage)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pytest

from study.config import CropConfig
from study.data.inspect_stats import batch_stats as kind_batch_stats, crop_counts, finish, merge, naming_counts, render_text
from study.data.records import RECORD_SCHEMA, STATUS

CHECKS = {"ssl_dejavu": ("crop", crop_counts), "vlm_dejavu": ("naming", naming_counts)}  # the kinds' inspect_check


def batch_stats(table, crop_cfg, study="ssl_dejavu"):
    return kind_batch_stats(table, crop_cfg, CHECKS[study])

SCHEMA = RECORD_SCHEMA.append(pa.field(STATUS, pa.string()))


def _box(x0, y0, x1, y1, label=0):
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "label": label}


def _row(status, w, h, label, boxes, caption, objects):
    return {"id": f"r{w}x{h}", "image": b"", "width": w, "height": h, "label": label, "boxes": boxes,
            "caption": caption, "objects": objects, STATUS: status}


# Per row: the crop (min side 8) and the caption check, as worked out by hand.
ROWS = [
    _row("ok", 32, 24, 1, [_box(0, 0, 8, 8, 1)], "a cat on a mat", ["cat"]),  # crop 24x24 right of the box; named
    _row("ok", 16, 16, 1, [_box(0, 0, 16, 16, 1)], "two dogs", ["dog", "cat"]),  # fully_covered; none named
    _row("ok", 64, 100, 2, [_box(10, 10, 5, 20, 2)], None, ["bird"]),  # box_inverted; no caption
    _row("ok", 600, 1200, None, None, "   ", None),  # no_label; blank caption: missing, 0 words
    _row("ok", 40, 40, 0, [_box(0.1, 0.1, 0.5, 0.5)],  # box_normalised; 16 words, all named
         "a bird and a cat and a dog sitting together on the old wooden fence today", ["bird", "cat", "dog"]),
    _row("undecodable", 10, 10, 7, None, "x", ["zebra"]),  # counts only as a status
    _row("ok", 20, 20, 2, [], "dog", []),  # no_boxes; no objects to check
    _row("ok", 32, 32, 0, [_box(40, 40, 50, 50)], "a cat", ["cat"]),  # box_outside_image; named
]
TABLE = pa.Table.from_pylist(ROWS, schema=SCHEMA)


def test_batch_stats_by_hand():
    s = batch_stats(TABLE, CropConfig())
    assert s["records"] == 8
    assert s["status"] == {"ok": 7, "undecodable": 1}
    assert s["labels"] == {"0": 2, "1": 2, "2": 2}
    assert s["objects"] == {"cat": 4, "dog": 2, "bird": 2}
    # words of the non-null captions: 5, 2, 0, 16, 1, 2
    assert s["caption_words"] == {"count": 6, "sum": 26, "min": 0, "max": 16, "buckets": [1, 3, 1, 1, 0, 0]}
    assert s["width"] == {"count": 7, "sum": 804, "min": 16, "max": 600}
    assert s["height"] == {"count": 7, "sum": 1432, "min": 16, "max": 1200}
    assert s["short_side"] == [3, 2, 1, 0, 0, 1, 0]  # 24, 16, 20 | 40, 32 | 64 | - | - | 600 | -
    assert s["missing"] == {"label": 1, "boxes": 1, "caption": 2, "objects": 1}
    assert s["box_problems"] == {"box_inverted": 1, "box_normalised": 1, "box_outside_image": 1}
    assert s["crop"] == {"valid": 1, "skipped": {"fully_covered": 1, "box_inverted": 1, "no_label": 1,
                                                  "box_normalised": 1, "no_boxes": 1, "box_outside_image": 1}}
    assert "naming" not in s


def test_vlm_caption_check_by_hand():
    s = batch_stats(TABLE, CropConfig(), study="vlm_dejavu")
    assert s["naming"] == {"all_named": 3, "some_unnamed": 1, "not_checked": 3, "objects": 7, "objects_unnamed": 2}
    assert "crop" not in s


def test_corner_rule_only_needs_a_label():
    s = batch_stats(TABLE, CropConfig(rule="corner"))
    assert s["crop"] == {"valid": 6, "skipped": {"no_label": 1}}


def test_columns_a_shard_lacks_count_as_missing():
    t = pa.table({"id": ["a", "b"], "image": [b"", b""], "width": [8, 300], "height": [9, 40]})
    s = batch_stats(t, CropConfig(), study="vlm_dejavu")
    assert s["status"] == {"ok": 2}
    assert s["missing"] == {"label": 2, "boxes": 2, "caption": 2, "objects": 2}
    assert s["caption_words"]["count"] == 0 and s["caption_words"]["min"] is None
    assert s["short_side"] == [1, 1, 0, 0, 0, 0, 0]
    assert s["naming"]["not_checked"] == 2


def test_a_record_without_size_has_no_crop():
    t = pa.Table.from_pylist([_row("ok", None, 16, 1, [_box(40, 0, 50, 4)], "a cat", ["cat"])], schema=SCHEMA)
    s = batch_stats(t, CropConfig())
    assert s["crop"] == {"valid": 0, "skipped": {"no_size": 1}}
    assert s["box_problems"] == {} and s["width"]["count"] == 0 and s["short_side"] == [0] * 7


@pytest.mark.parametrize("study", ["ssl_dejavu", "vlm_dejavu"])
def test_merge_of_parts_is_the_whole(study):
    whole = batch_stats(TABLE, CropConfig(), study)
    a, b, c = (batch_stats(TABLE.slice(o, n), CropConfig(), study) for o, n in ((0, 5), (5, 1), (6, 2)))
    assert b["width"]["min"] is None  # a part with no usable record
    halves = merge(batch_stats(TABLE.slice(0, 4), CropConfig(), study),
                   batch_stats(TABLE.slice(4), CropConfig(), study))
    assert halves == whole
    assert merge(merge(a, b), c) == merge(a, merge(b, c)) == whole
    assert merge(c, merge(b, a)) == whole
    assert json.loads(json.dumps(whole)) == whole  # partial counts travel as JSON


def test_summary_and_text():
    summary = finish(batch_stats(TABLE, CropConfig()))
    assert summary["labels"] == [(0, 2), (1, 2), (2, 2)]
    assert summary["objects"] == {"distinct": 3, "top": [("cat", 4), ("bird", 2), ("dog", 2)]}
    assert summary["caption_words"]["mean"] == pytest.approx(26 / 6)
    assert summary["image_size"]["width"]["mean"] == pytest.approx(804 / 7)
    text = render_text(summary)
    assert re.search(r"^  undecodable +1$", text, re.M)
    assert re.search(r"^  box_outside_image +1$", text, re.M)
    assert re.search(r"^  skipped: no_label +1$", text, re.M)


def test_statistics_load_no_ray():
    code = "import sys, study.data.inspect_stats; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the command -------------------------------------------------------------------------------
def _one_error_line(capsys, argv: list[str], *fragments: str) -> None:
    from study.cli import main

    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs_give_one_error_line(tmp_path, capsys):
    _one_error_line(capsys, ["data", "inspect", str(tmp_path / "nope")], "input path does not exist")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path), "--source", "tarballs"], "data.source", "parquet")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path), "--source", "synthetic"], "dejavu data synth")
    _one_error_line(capsys, ["data", "inspect", "nosuch://bucket/x"], "cannot open", "nosuch")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path)], "no .parquet record shards")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path), "--study", "dino"], "unknown study kind 'dino'",
                    "ssl_dejavu")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path), "--study", "sslmem"], "the sslmem study has no input check",
                    "['ssl_dejavu', 'vlm_dejavu']")
    _one_error_line(capsys, ["data", "inspect", str(tmp_path), "--set", "train.epochs=2"], "data.*")


def _section(text: str, title: str) -> dict[str, str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title)) + 1
    rows = {}
    for ln in lines[start:]:
        if not ln.startswith("  "):
            break
        name, value = ln.strip().rsplit(None, 1)
        rows[name] = value
    return rows


def test_inspect_synthetic_shards(ray_local, tmp_path, capsys):
    from study.cli import main
    from study.config_load import load_config
    from study.data.synth_write import write_synthetic
    from study.data.synthetic import make_record

    data = load_config(None, ["data.num_images=60", "data.image_size=16", "data.shard_size=30"]).data
    write_synthetic(data, "records", str(tmp_path / "records"))
    page = tmp_path / "out" / "inspect.html"
    assert main(["data", "inspect", str(tmp_path / "records"), "--html", str(page), "--sample", "5"]) == 0
    out = capsys.readouterr().out
    assert _section(out, "records") == {"read": "60", "ok": "60"}
    labels = Counter(make_record(i, data)["label"] for i in range(60))
    assert _section(out, "labels") == {str(k): str(v) for k, v in labels.items()}
    assert _section(out, "missing fields") == {f: "0" for f in ("label", "boxes", "caption", "objects")}
    assert f"page with 5 sampled records: {page}" in out
    text = page.read_text()
    assert text.count("<img ") == 5 and text.count('src="data:image/png;base64,') == 5
    assert "<h3>labels (10 distinct)</h3>" in text


def test_the_kinds_checks_are_the_ones_tested_here():
    from study.frame.kinds import get_kind

    for study, check in CHECKS.items():
        assert get_kind(study).inspect_check == check
    assert get_kind("sslmem").inspect_check is None  # no check of its own: data inspect says so


def test_inspect_previews_an_annotator_on_the_sampled_records(ray_local, tmp_path, capsys):
    """`--set annotate.*` runs the annotator on the sampled records only (here an open_clip tagger
    with small random weights over the generator's digit names, every record given its 2 most
    probable tags) and shows what it found, with and without a page."""
    import open_clip
    import torch

    from study.cli import main
    from study.config_load import load_config
    from study.data.synth_write import write_synthetic
    from study.data.synthetic import class_name
    from study.train.clip import register_model_configs

    data = load_config(None, ["data.num_images=40", "data.image_size=16", "data.shard_size=20"]).data
    write_synthetic(data, "records", str(tmp_path / "records"))
    register_model_configs()
    torch.manual_seed(0)
    torch.save(open_clip.create_model("dejavu-tiny").state_dict(), tmp_path / "tagger.pt")
    (tmp_path / "digits.txt").write_text("".join(f"{class_name(c)}\n" for c in range(10)))
    args = ["data", "inspect", str(tmp_path / "records"), "--sample", "6"]
    for o in ("annotate.annotator=open_clip", "annotate.architecture=dejavu-tiny", f"annotate.weights={tmp_path / 'tagger.pt'}",
              f"annotate.vocabulary={tmp_path / 'digits.txt'}", "annotate.score=0", "annotate.max_tags=2"):
        args += ["--set", o]
    assert main(args) == 0
    section = _section(capsys.readouterr().out, "annotator on 6 sampled records")
    assert section["with objects"] == "6" and section["objects per image"] == "2.0"
    assert sum(int(v) for k, v in section.items() if k.startswith("object:")) == 12
    page = tmp_path / "inspect.html"
    assert main(args + ["--html", str(page)]) == 0
    text = page.read_text()
    assert "<h3>annotator on 6 sampled records</h3>" in text and text.count("<img ") == 6
    import re

    shown = re.findall(r"objects ([a-z, -]+)<br>", text)  # the montage shows the annotator's 2 tags, not the record's 1 object
    assert len(shown) == 6 and all(len(s.split(", ")) == 2 for s in shown)
