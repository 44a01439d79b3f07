"""The Python API (``import study``): the runnable example under docs/ runs a tiny study (finished
by the command line beforehand, so every stage is reused) and plots from its report; the report, listing and pull functions read what it wrote; user mistakes are
StudyErrors, as the command line prints them."""
from __future__ import annotations

import os
import json
import runpy
import shutil
import subprocess
import sys

import pytest

import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_study_loads_nothing_heavy():
    code = "import sys, study; print(','.join(m for m in ('torch', 'ray', 'faiss', 'study.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_the_example_runs_a_study_and_the_api_reads_it(ray_local, tiny_pair, tmp_path):
    # The example's config, finished by the command line (the tiny_pair fixture) and copied here:
    # the example's study.run finds every stage finished and reuses it.
    assert tiny_pair[1].returncode == 0, tiny_pair[1].stderr
    shutil.copytree(tiny_pair[1].output, tmp_path / "runs")
    example = runpy.run_path(os.path.join(ROOT, "docs", "examples", "python_api.py"))
    png = example["main"](str(tmp_path / "runs"))
    assert os.path.getsize(png) > 1000 and open(png, "rb").read(4) == b"\x89PNG"

    (run,) = study.list_reports(str(tmp_path / "runs"))
    assert run.has_report and run.study == "ssl_dejavu" and run.all_finished
    report = study.open_report(run.uri)
    assert isinstance(report, study.Report) and report.study == "ssl_dejavu" and report.name == "tiny"
    assert set(report.headline) == {"projector/positive", "projector/null", "backbone/positive", "backbone/null"}
    assert report.results == report.data["results"] and report.config["name"] == "tiny"
    assert report.summary()[0] == "study tiny (ssl_dejavu)"
    assert report.results == json.load(open(os.path.join(tiny_pair[1].run_dir, "report", "report.json")))["results"]

    pulled = study.pull_report(run.uri, str(tmp_path / "copy"))
    assert study.open_report(pulled.dest).headline == report.headline


def test_user_mistakes_are_study_errors(tmp_path):
    cfg = study.load_config(None, ["search.k=7"])
    assert cfg.search.k == 7
    with pytest.raises(study.ConfigError, match="train.epoch"):
        study.load_config(None, ["train.epoch=3"])
    with pytest.raises(study.StudyError, match="overrides apply to a config read from a file"):
        study.run(cfg, overrides=["search.k=3"])
    with pytest.raises(study.StudyError, match="no report.json"):
        study.open_report(str(tmp_path))
    with pytest.raises(study.StudyError, match="unknown format 'jpeg'"):
        study.synth(str(tmp_path / "out"), format="jpeg")
