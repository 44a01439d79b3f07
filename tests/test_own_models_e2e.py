"""An SSL study of models trained elsewhere on the splits their owner gives, end to end. A study the
product trains gives the weights and the records each model saw; they come back as a user has
them: each encoder as a DDP state dict (``module.`` keys under ``state_dict``) with the input
scaling it trained with, and the splits as a Parquet table of keys (with two keys the data lacks,
a repeated row, and no holdout). Nothing trains; the splits are the file's; every positive-control
number equals the run that trained the weights; the report says where the models and the splits
came from, what the file listed that the data lacks, and that no null control was possible."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from study import storage
from study.cli import main
from study.config_load import load_config
from study.data.loading import read_split
from study.frame.context import RunContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/tiny.yaml")


def _run(out: str, overrides: list[str]) -> RunContext:
    args = ["run", CONFIG, "--output", out]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    return RunContext.create(load_config(CONFIG, overrides, out))


def test_an_ssl_study_of_imported_encoders_on_the_users_splits(ray_local, tmp_path, capsys):
    trained = _run(str(tmp_path / "trained"), [])
    given = {s: list(read_split(trained.splits_dir, s)[0]) for s in ("target", "reference", "public", "holdout")}
    rows = [(i, s) for s in ("target", "reference", "public") for i in given[s]]
    rows += [("not-in-the-data-1", "target"), ("not-in-the-data-2", "public"), rows[0]]
    splits_file = str(tmp_path / "splits.parquet")
    pq.write_table(pa.table({"key": [i for i, _ in rows], "split": [s for _, s in rows]}), splits_file)
    files = {}
    for model in ("model_a", "model_b"):
        blob = torch.load(trained.model_file(model), map_location="cpu", weights_only=False)
        files[model] = str(tmp_path / f"{model}.pt")
        torch.save({"state_dict": {f"module.{k}": v for k, v in blob["state_dict"].items()}, "epoch": 4}, files[model])
    overrides = [f"splits.assignments={splits_file}", f"train.checkpoint={files['model_a']}",
                 f"train.checkpoint_b={files['model_b']}", "model.image_mean=[0.5, 0.5, 0.5]",
                 "model.image_std=[0.25, 0.25, 0.25]"]
    capsys.readouterr()
    imported = _run(str(tmp_path / "imported"), overrides)
    log = capsys.readouterr().out
    assert "fitting" not in log
    assert (f"splits from {splits_file}: target {len(given['target']) + 1}, reference {len(given['reference'])}, "
            f"public {len(given['public']) + 1}; 2 listed id(s) not in the data") in log
    manifest = storage.read_json(imported.manifest)
    assert manifest["counts"] == {**{s: len(given[s]) for s in ("target", "reference", "public")}, "holdout": 0,
                                  "shared": 0}
    assert manifest["unassigned"] == storage.read_json(trained.manifest)["unassigned"] + len(given["holdout"])
    a = manifest["assignments"]
    assert a["missing"] == {"target": 1, "reference": 0, "public": 1} and a["repeated_rows"] == 1
    assert a["fingerprint"] == hashlib.sha256(open(splits_file, "rb").read()).hexdigest()
    for s in ("target", "reference", "public"):
        assert sorted(read_split(imported.splits_dir, s)[0]) == sorted(given[s])
    first = storage.read_json(trained.measure_results)
    again = storage.read_json(imported.measure_results)
    assert set(again) == set(first) == {"backbone", "projector"}
    for space in first:
        assert again[space]["positive"] == first[space]["positive"]
        assert "null" in first[space] and "null" not in again[space]
    report = storage.read_json(imported.report_json)
    page = storage.read_bytes(imported.stage_dir("report", "report.html")).decode()
    for text in ("No holdout split was given: no null control was possible.", a["fingerprint"][:16],
                 "2 listed record(s) are not in the data"):
        assert text in page
    for model in ("model_a", "model_b"):
        assert report["training"][model]["fingerprint"] == hashlib.sha256(open(files[model], "rb").read()).hexdigest()
        assert report["training"][model]["image_mean"] == [0.5] * 3
    from study.report.summary import summary_lines

    lines = "\n".join(summary_lines(report))
    assert f"The splits came from the user: {splits_file}" in lines and "no null control was possible" in lines
