"""The stage frame shared by the study kinds: stage hashes, sweeps, artifact paths, the registry."""
from __future__ import annotations

import os

import pytest

from study.config_load import load_config
from study.errors import ConfigError
from study.frame.context import RunContext
from study.frame.kinds import CONTROLS, get_kind, side_ids
from study.frame.runner import STAGE_NAMES, stage_digest, stages
from study.frame.sweep import settings_of


def _digests(overrides):
    cfg = load_config(None, ["data.num_images=100", *overrides])
    digests = {}
    for stage in stages():
        if stage.enabled(cfg):
            digests[stage.name] = stage_digest(stage, cfg, digests)
    return digests


ANNOTATED = ["annotate.annotator=torchvision", "annotate.weights=/nonexistent/detector.pt"]


@pytest.mark.parametrize(
    "override, changed",
    [
        ("measure.bootstrap=200", {"measure", "report"}),
        ("search.k=7", {"search", "measure", "report"}),
        ("embed.crop.min_side=5", {"embed", "search", "measure", "report"}),
        ("train.epochs=3", {"train", "embed", "search", "measure", "report"}),
        ("splits.seed=3", {"splits", "train", "embed", "search", "measure", "report"}),
        ("report.neighbors_shown=2", {"report"}),
        ("report.gallery_size=2", {"measure", "report"}),
        ("data.image_size=24", {"data", "splits", "train", "embed", "search", "measure", "report"}),
        # Without an annotator its section is read by no stage but the report (the saved config).
        ("annotate.score=0.4", {"report"}),
    ],
)
def test_a_stage_reruns_exactly_when_what_it_reads_changes(override, changed):
    base, other = _digests([]), _digests([override])
    assert {name for name in base if base[name] != other[name]} == changed


AFTER_ANNOTATE = {"annotate", "splits", "train", "embed", "search", "measure", "report"}


@pytest.mark.parametrize("override, changed", [
    ("annotate.score=0.4", AFTER_ANNOTATE),
    ("annotate.vocabulary=/nonexistent/words.txt", AFTER_ANNOTATE),
    ("data.image_size=24", {"data"} | AFTER_ANNOTATE),
    ("train.epochs=3", {"train", "embed", "search", "measure", "report"}),
])
def test_with_an_annotator_its_stage_runs_after_data_and_everything_after_it_follows(override, changed):
    base, other = _digests(ANNOTATED), _digests(ANNOTATED + [override])
    assert set(base) == set(STAGE_NAMES) and "annotate" not in _digests([])
    assert {name for name in base if base[name] != other[name]} == changed


def test_new_weights_at_the_same_place_rerun_the_annotate_stage(tmp_path):
    weights = tmp_path / "detector.pt"
    weights.write_bytes(b"one")
    on = [*ANNOTATED[:1], f"annotate.weights={weights}"]
    before = _digests(on)
    weights.write_bytes(b"other weights")
    after = _digests(on)
    assert {name for name in before if before[name] != after[name]} == AFTER_ANNOTATE


def test_stage_names_list_the_stages_in_run_order():
    """The light list `dejavu report` and `--until` use is the stages' own, in order."""
    assert STAGE_NAMES == tuple(stage.name for stage in stages())


def test_sweep_settings_resolve_each_value_and_share_data_and_splits():
    cfg = load_config(None, ["study=vlm_dejavu", "train.method=clip", "sweep={train.text_randomization.p: [0, 0.3]}"])
    settings = settings_of(cfg)
    assert [name for name, _ in settings] == ["p=0", "p=0.3"]
    assert [s.train.text_randomization.p for _, s in settings] == [0.0, 0.3]
    assert all(not s.sweep for _, s in settings)
    ctx = RunContext.create(cfg)
    sctx = ctx.for_setting(settings[1][1], settings[1][0])
    assert sctx.model_file("model_a").endswith("/settings/p=0.3/train/model_a/model.pt")
    assert sctx.splits_dir == ctx.splits_dir and sctx.report_json == ctx.report_json
    assert sctx.search_results("model_b", "target", "caption_to_image").endswith(
        "/settings/p=0.3/search/model_b/target/caption_to_image")
    assert settings_of(load_config(None, []))[0][0] == ""


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("{data.num_images: [100, 200]}", "cannot be swept"),
        ("{train.text_randomization.p: [0, 2]}", "train.text_randomization.p: must be in [0, 1]"),
        ("{train.nope: [1]}", "unknown config key 'train.nope'"),
        ("{train.epochs: []}", "non-empty list"),
        ("{train.epochs: [1, 1]}", "listed twice"),
        ("{train.epochs: [1], train.lr: [0.1]}", "exactly one key"),
    ],
)
def test_bad_sweeps_fail_with_the_key(sweep, message):
    cfg = load_config(None, [f"sweep={sweep}"])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_of(cfg)


def test_kind_registry():
    with pytest.raises(ConfigError, match="unknown study kind 'nope'"):
        get_kind("nope")
    ssl, vlm = get_kind("ssl_dejavu"), get_kind("vlm_dejavu")
    assert ssl.models == vlm.models == {"model_a": "target", "model_b": "reference"}
    assert set(ssl.spaces) == {"projector", "backbone"} and list(vlm.spaces) == ["caption_to_image"]
    cfg = load_config(None, ["search.representations=[projector]"])
    assert ssl.spaces_for(cfg) == ("projector",)
    with pytest.raises(ConfigError, match="not offered by vlm_dejavu"):
        vlm.spaces_for(cfg)


def test_null_control_halves_are_disjoint_and_cover_the_holdout():
    ids = [f"r{i}" for i in range(200)]
    a, b = side_ids(ids, "null", "a", 0), side_ids(ids, "null", "b", 0)
    assert not set(a) & set(b) and sorted(a + b) == sorted(ids) and 60 < len(a) < 140
    assert side_ids(ids[::-1], "positive", "a", 0) == sorted(ids)
    assert [s for _, s, _, _ in CONTROLS["null"]] == ["holdout", "holdout"]


def test_the_own_instance_settings_apply_there_only_and_are_put_back(monkeypatch):
    """On the study's own instance: Parquet files listed by the reading process and no preemption
    watcher; with a cluster address, Ray's defaults; afterwards, what was set before."""
    import ray.data

    from study.config import RayConfig
    from study.frame.cluster import reads_for
    from study.train.driver import _environment, _fit_env

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "use_datasource_v2", True)
    with reads_for(RayConfig()):
        assert context.use_datasource_v2 is False
    assert context.use_datasource_v2 is True
    with reads_for(RayConfig(address="10.0.0.1:6379")):
        assert context.use_datasource_v2 is True

    train = load_config(None, ["train.poll_s=0.25"]).train
    assert _fit_env({"train": train, "one_machine": True}) == {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    assert _fit_env({"train": train, "one_machine": False}) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    with _environment(_fit_env({"train": train, "one_machine": True})):
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.25"
        assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2"
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ


_GROUP_AFTER_POOL_GROWS = """
import numpy as np, pyarrow as pa
from study.frame.tally import _grouped
n = 600_000
table = pa.concat_tables([pa.table({"g": np.arange(i, i + 10_000) % 7, "v": np.ones(10_000, np.int64)})
                          for i in range(0, n, 10_000)])
_grouped(table.slice(0, 10), lambda t: t, ("g",), ("v",), ())
pa.set_cpu_count(32)  # what Ray Data's Parquet reader does in the worker it reads in
for _ in range(5):
    out = _grouped(table, lambda t: t, ("g",), ("v",), ())
    assert sorted(out.column("count").to_pylist()) == sorted(np.bincount(np.arange(n) % 7).tolist())
    assert sum(out.column("v").to_pylist()) == n
"""


def test_grouped_totals_survive_a_cpu_pool_grown_after_the_first_grouping():
    """A reused Ray worker whose CPU pool a Parquet read enlarged still groups (threaded pyarrow
    grouping fails there with 'thread index N is out of range'); its own process, since the pool
    is process-wide."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _GROUP_AFTER_POOL_GROWS], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
