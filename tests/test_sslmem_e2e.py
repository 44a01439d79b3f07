"""The SSLMem study end to end on a reduced config on the local Ray instance: every scored record's
scores written, the streamed alignments and scores equal to the definition worked out here from
the two saved encoders and each record's keyed views, each encoder trained on its own sets,
candidates scoring above the independent set (a positive control: 80 candidates seen 60 epochs by
f) and the extra set, which neither encoder saw, scoring as the independent set does under a
relabelling (a null control)."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.data.loading import load_inputs, read_split
from study.embed.alignment import AlignmentScorer, record_views
from study.frame.context import RunContext
from study.kinds.sslmem.measure import SCORES_FILE
from study.report.summary import summary_lines
from study.train.models import load_model, normalize
from study.data.model_input import ModelInput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["data.num_images=400", "train.epochs=60", "train.checkpoint_every=30", "measure.bootstrap=200",
             "measure.permutations=500", "sslmem.layers=[backbone.5]", "sslmem.range_normalised=true"]


@pytest.fixture(scope="module")
def sslmem_run(ray_local, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs"))
    args = ["run", os.path.join(ROOT, "configs/sslmem.yaml"), "--output", out]
    for o in OVERRIDES:
        args += ["--set", o]
    assert main(args) == 0
    ctx = RunContext.create(load_config(os.path.join(ROOT, "configs/sslmem.yaml"), OVERRIDES, out))
    return ctx, storage.read_json(ctx.report_json)


def test_every_scored_record_has_its_scores(sslmem_run):
    ctx, report = sslmem_run
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas()
    for split, name in (("target", "candidates"), ("reference", "independent"), ("holdout", "extra")):
        ids, _ = read_split(ctx.splits_dir, split)
        assert sorted(table[table["set"] == name]["id"]) == sorted(ids)
        assert report["results"]["projector"]["raw"]["sets"][name]["n"] == len(ids)
    assert set(report["results"]) == {"projector", "backbone", "backbone.5"}
    assert report["training"]["model_a"]["splits"] == ["target", "shared"]
    assert report["training"]["model_b"]["splits"] == ["reference", "shared"]


def test_streamed_scores_equal_an_in_process_computation(sslmem_run):
    ctx, _ = sslmem_run
    cfg = ctx.cfg
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas().set_index("id")
    ids = list(table.index[:12])
    images = load_inputs(ctx.data_root, ids, ModelInput.of(cfg.data))
    pixels = np.stack([images[i] for i in ids])
    torch.set_num_threads(1)
    scorer = AlignmentScorer({m: ctx.model_file(m) for m in ("model_a", "model_b")}, 1, cfg.sslmem.spaces(),
                             cfg.sslmem.views, cfg.train.augment, cfg.sslmem.seed)
    out = scorer({"id": np.array(ids, dtype=object), "set": np.array(["x"] * len(ids), dtype=object), "pixels": pixels})
    for space in cfg.sslmem.spaces():
        np.testing.assert_allclose(out[f"model_a/align-{space}"][:, 0], table.loc[ids, f"{space}/align_f"], rtol=1e-4)
        np.testing.assert_allclose(out[f"model_b/align-{space}"][:, 0], table.loc[ids, f"{space}/align_g"], rtol=1e-4)


def _alignment_by_definition(encoder, x: torch.Tensor, views: torch.Tensor) -> dict[str, np.ndarray]:
    """Per space: mean over the views v of || h(x)/|h(x)| - h(v)/|h(v)| ||, record by record."""
    out = {}
    with torch.inference_mode():
        own = dict(zip(("backbone", "projector"), encoder(x)))
        seen = [dict(zip(("backbone", "projector"), encoder(v))) for v in views]
    for space in ("backbone", "projector"):
        unit = lambda t: t.double() / t.double().norm(dim=1, keepdim=True)  # noqa: E731
        dists = torch.stack([(unit(s[space]) - unit(own[space])).norm(dim=1) for s in seen])
        out[space] = dists.mean(dim=0).numpy()
    return out


def test_scores_follow_the_definition(sslmem_run):
    """score = align_g - align_f, with f (model A, trained on the candidates) and g (model B),
    from the saved encoders and the views keyed by each record's id and ``sslmem.seed``."""
    ctx, _ = sslmem_run
    cfg = ctx.cfg
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas().set_index("id")
    ids = [i for name in ("candidates", "independent", "extra") for i in list(table[table["set"] == name].index[:8])]
    images = load_inputs(ctx.data_root, ids, ModelInput.of(cfg.data))
    x = normalize(torch.from_numpy(np.stack([images[i] for i in ids])).permute(0, 3, 1, 2))
    views = record_views(x, ids, cfg.sslmem.views, cfg.train.augment, cfg.sslmem.seed)
    assert views.shape[0] == cfg.sslmem.views == 5
    torch.set_num_threads(1)
    f = _alignment_by_definition(load_model(storage.read_bytes(ctx.model_file("model_a")))[0].eval(), x, views)
    g = _alignment_by_definition(load_model(storage.read_bytes(ctx.model_file("model_b")))[0].eval(), x, views)
    for space in ("projector", "backbone"):
        np.testing.assert_allclose(table.loc[ids, f"{space}/align_f"], f[space], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(table.loc[ids, f"{space}/align_g"], g[space], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(table.loc[ids, f"{space}/score"], g[space] - f[space], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(table.loc[ids, f"{space}/normalised"], (g[space] - f[space]) / (g[space] + f[space]),
                                   rtol=1e-4, atol=1e-6)


def test_candidates_stand_above_the_independent_set(sslmem_run):
    ctx, report = sslmem_run
    head = report["headline"]["projector/candidates-vs-independent"]
    assert head["difference"] > 0 and head["ci"][0] > 0 and head["p_value"] < 0.05, head
    assert head["auc"] > 0.5 and head["high_share"] > head["expected_high_share"]
    top = report["results"]["projector"]["most_memorized"]
    assert len(top) == ctx.cfg.report.gallery_size and [t["score"] for t in top] == sorted(
        (t["score"] for t in top), reverse=True)
    candidates, _ = read_split(ctx.splits_dir, "target")
    assert {t["id"] for t in top} <= set(candidates)
    page = open(ctx.report_html).read()
    assert "Most memorized candidates" in page and "candidates vs. extra" in page
    lines = "\n".join(summary_lines(report))
    assert "projector/candidates-vs-independent" in lines and SCORES_FILE in lines


def test_the_published_normalisation_divides_by_the_candidates_range(sslmem_run):
    """The authors' normalisation, worked from the persisted raw scores: every score over (max - min)
    of the candidates' raw scores. A constant: mean differences scale by it, AUCs do not move."""
    ctx, report = sslmem_run
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas()
    for space, res in report["results"].items():
        cand = table.loc[table["set"] == "candidates", f"{space}/score"].to_numpy()
        spread = cand.max() - cand.min()
        assert res["range"]["sets"]["candidates"]["mean"]["value"] == pytest.approx(cand.mean() / spread, rel=1e-9)
        for control, t in res["range"]["tests"].items():
            raw = res["raw"]["tests"][control]
            assert t["mean_difference"]["value"] == pytest.approx(raw["mean_difference"]["value"] / spread, rel=1e-9)
            assert t["auc"]["value"] == pytest.approx(raw["auc"]["value"], abs=1e-12)
    assert "the published normalisation" in open(ctx.report_html).read()


def test_null_control_extra_set(sslmem_run):
    """The extra set, which neither encoder trained on: in the projector space (the one the
    encoders' loss shapes, the paper's) its mean score's interval covers 0; and in every space its
    two halves (split by a keyed hash of the id, independent of the split plan) test as equal."""
    from study.core import sslmem
    from study.core.splits import hash_unit

    ctx, report = sslmem_run
    extra = report["results"]["projector"]["raw"]["sets"]["extra"]["mean"]
    assert extra["ci"][0] <= 0 <= extra["ci"][1], extra
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas()
    rows = table[table["set"] == "extra"]
    half = hash_unit(list(rows["id"]), 12345) < 0.5
    for space in ("projector", "backbone"):
        scores = rows[f"{space}/score"].to_numpy()
        test = sslmem.compare(scores[half], scores[~half], 200, 500, 0.95, 0, 0.95)["mean_difference"]
        assert test["ci"][0] <= 0 <= test["ci"][1] and test["p_value"] > 0.01, (space, test)


def test_statistics_in_several_tasks_give_the_same_results(sslmem_run, monkeypatch):
    """The measure stage again with its draws split over 2 to 4 tasks (keyed draws): the same
    results, and each statistic as the one-process functions give it from the scores file."""
    from study.core import sslmem
    from study.kinds.sslmem import measure
    from study.stages import measure_tasks

    ctx, report = sslmem_run
    before = storage.read_json(ctx.measure_results)
    monkeypatch.setattr(measure_tasks, "DRAWS_PER_TASK", 130)
    monkeypatch.setattr(measure, "cpus", lambda: 4)
    measure.run_measure(ctx)
    assert storage.read_json(ctx.measure_results) == before
    m, q = ctx.cfg.measure, ctx.cfg.sslmem.high_quantile
    table = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas()
    by_set = {name: table[table["set"] == name]["backbone/normalised"].to_numpy()
              for name in ("candidates", "independent", "extra")}
    got = before["backbone"]["normalised"]
    for control in ("independent", "extra"):
        want = sslmem.compare(by_set["candidates"], by_set[control], m.bootstrap, m.permutations, m.confidence_level,
                              m.seed, q)
        assert got["tests"][control] == want
    for k, (name, values) in enumerate(by_set.items()):
        assert got["sets"][name] == sslmem.describe(values, m.bootstrap, m.confidence_level, m.seed, k)


def test_imported_encoders_on_the_users_splits_give_the_same_scores(sslmem_run, tmp_path, capsys):
    """f and g as a user brings them (DDP state dicts under "state_dict", the mean and std they
    trained with stated), the sets as per-split text files: nothing trains, and every record's
    alignments and scores are the trained run's (the views, drawn as for the product's models, are
    mapped to the stated scaling, which here is the product's own)."""
    ctx, report = sslmem_run
    lists = tmp_path / "splits"
    lists.mkdir()
    for split in ("shared", "target", "reference", "holdout"):
        (lists / f"{split}.txt").write_text("\n".join(read_split(ctx.splits_dir, split)[0]) + "\n")
    files = {}
    for model in ("model_a", "model_b"):
        blob = torch.load(ctx.model_file(model), map_location="cpu", weights_only=False)
        files[model] = str(tmp_path / f"{model}.pt")
        torch.save({"state_dict": {f"module.{k}": v for k, v in blob["state_dict"].items()}}, files[model])
    overrides = OVERRIDES + [f"train.checkpoint={files['model_a']}", f"train.checkpoint_b={files['model_b']}",
                             "model.image_mean=[0.5, 0.5, 0.5]", "model.image_std=[0.25, 0.25, 0.25]",
                             f"splits.assignments={lists}"]
    args = ["run", os.path.join(ROOT, "configs/sslmem.yaml"), "--output", str(tmp_path / "runs")]
    for o in overrides:
        args += ["--set", o]
    capsys.readouterr()
    assert main(args) == 0
    assert "fitting" not in capsys.readouterr().out
    imported = RunContext.create(load_config(os.path.join(ROOT, "configs/sslmem.yaml"), overrides, str(tmp_path / "runs")))
    before = pq.read_table(ctx.stage_dir("measure", SCORES_FILE)).to_pandas().set_index("id").sort_index()
    after = pq.read_table(imported.stage_dir("measure", SCORES_FILE)).to_pandas().set_index("id").sort_index()
    assert list(after.index) == list(before.index) and list(after["set"]) == list(before["set"])
    for column in [c for c in before.columns if c != "set"]:
        np.testing.assert_allclose(after[column], before[column], rtol=1e-4, atol=1e-6)
    again = storage.read_json(imported.report_json)
    assert again["splits"]["counts"] == report["splits"]["counts"]
    assert again["training"]["model_a"]["format"] == "state dict"
