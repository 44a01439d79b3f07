"""Raw img2dataset webdataset shards to a VLM report with nothing but the product: no side table,
the objects found by an open_clip tagger (small random weights saved as a state dict) over a
vocabulary file. ``dejavu data annotate`` writes the side table on its own; the study over the
same input and annotator reuses it, runs every stage on the annotator's objects, and its report
and summary name the annotator."""
from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.data import records, synthetic
from study.errors import DataError
from study.frame.context import RunContext
from study.frame.validate import check_registries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
GEN = ["data.image_size=32", "data.num_classes=10", "data.objects_per_image=[2, 4]", "data.object_scale=[0.25, 0.35]",
       "data.background=texture_gray", "data.caption_objects=1"]
SMALL = ["name=annotated-vlm", "train.epochs=1", "train.warmup_epochs=0", "train.checkpoint_every=1",
         "train.num_workers=1", "train.cpus_per_worker=0.5", "search.k=10", "measure.ks=[1, 10]",
         "measure.bootstrap=50", "measure.permutations=50", "measure.utility_records=50"]


@pytest.fixture(scope="module")
def inputs(ray_local, tmp_path_factory):
    import open_clip

    from study.train.clip import register_model_configs

    root = tmp_path_factory.mktemp("annotate_e2e")
    args = ["data", "synth", "--format", "webdataset", "--num", "240", "--output", str(root / "wds"), "--shard-size", "80",
            "--objects", str(root / "unused-objects.parquet")]  # the generator's own objects, kept apart
    for o in GEN:
        args += ["--set", o]
    assert main(args) == 0
    register_model_configs()
    torch.manual_seed(0)
    torch.save(open_clip.create_model("dejavu-tiny").state_dict(), root / "tagger.pt")
    (root / "digits.txt").write_text("".join(f"{synthetic.class_name(c)}\n" for c in range(10)))
    annotate = ["annotate.annotator=open_clip", "annotate.architecture=dejavu-tiny", f"annotate.weights={root / 'tagger.pt'}",
                f"annotate.vocabulary={root / 'digits.txt'}", "annotate.score=0", "annotate.max_tags=2"]
    return root, annotate


def test_webdataset_shards_to_a_vlm_report_through_the_annotator(inputs, capsys):
    root, annotate = inputs
    out, wds = str(root / "runs"), str(root / "wds")
    flags = [*SMALL, *annotate]
    args = ["data", "annotate", wds, "--config", CONFIG, "--output", out]
    for o in flags:
        args += ["--set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "annotation: open_clip (dejavu-tiny)" in printed and "240 images, 240 with objects, 2.00 objects per image" in printed
    cfg = load_config(CONFIG, [*flags, "data.source=webdataset", f"data.path={wds}"], out)
    ctx = RunContext.create(cfg)
    side = pq.read_table(ctx.annotations)
    assert side.num_rows == 240 and f"data.objects={ctx.annotations}" in printed

    run = ["run", CONFIG, "--output", out, "--set", "data.source=webdataset", "--set", f"data.path={wds}"]
    for o in flags:
        run += ["--set", o]
    assert main(run) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing finished stage") == 2  # data and annotate, from `dejavu data annotate`
    assert "annotation: open_clip (dejavu-tiny)" in printed
    # The study read the annotator's objects: the records every later stage reads carry them.
    used = records.dataset(ctx.data_root).to_table(columns=["id", "objects"]).sort_by("id").to_pylist()
    assert [r["objects"] for r in used] == [r["objects"] for r in side.sort_by("key").to_pylist()]
    report = storage.read_json(ctx.report_json)
    assert report["annotation"]["annotator"] == "open_clip" and report["annotation"]["images"] == 240
    assert report["headline"] and os.path.exists(ctx.measure_results)
    page = storage.read_bytes(ctx.report_html).decode()
    section = page[page.index("<h2>Annotation</h2>"):]
    assert "dejavu-tiny" in section and "Most frequent objects" in section
    assert section.count("<figure") == 12  # the gallery of annotated images, with their tags


def test_without_a_side_table_or_an_annotator_the_study_stops_before_any_stage(inputs):
    root, _ = inputs
    cfg = load_config(CONFIG, ["data.source=webdataset", f"data.path={root / 'wds'}"], str(root / "runs"))
    with pytest.raises(DataError, match=r"lack column\(s\) \['objects'\].*data.objects or have an annotator find them"):
        check_registries(cfg)
