"""A new study kind is one package plus one registry entry: a package written here, outside the
repository, registers a kind through the ``dejavu_study.kinds`` entry point group and runs end
to end through the command line (every stage, on Ray) without a file of the product changed.

The toy kind asks a simple question with the SSL kind's models, crops and search: how often an
attacked crop's nearest public neighbour has the crop's label. Its measure stage, headline,
report body and summary lines are its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KIND_MODULE = textwrap.dedent('''
    """A toy study kind: nearest-neighbour label agreement of attacked crops."""
    import dataclasses

    from study import storage
    from study.data import records
    from study.frame.kinds import get_kind
    from study.kinds.ssl_dejavu.kind import KIND as SSL
    from study.search.results import read_results


    def measure(ctx):
        cfg, kind = ctx.cfg, get_kind(ctx.cfg.study)
        out = {}
        for space in kind.spaces_for(cfg):
            for model in kind.models_for(cfg):
                for split in kind.attacked_sets(cfg):
                    queries, neighbours = read_results(ctx.search_results(model, split, space))
                    ids = sorted(set(queries) | {n[0] for n in neighbours})
                    table = records.read_records(ctx.data_root, ids, columns=["id", "label"])
                    label = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
                    agree = [label[q] == label[n[0]] for q, n in zip(queries, neighbours)]
                    out[f"{space}/{model}/{split}"] = {"agreement": sum(agree) / len(agree), "n": len(agree)}
        storage.write_json(ctx.measure_results, out)
        return {"measured": len(out)}


    def lines(report):
        return [f"  {key}: nearest-neighbour label agreement {v['agreement']:.3f} of {v['n']}"
                for key, v in sorted(report["headline"].items())]


    KIND = dataclasses.replace(
        SSL, name="toy_kind", title="Toy: nearest-neighbour label agreement", measure=measure,
        headline=lambda results: results, extras=lambda ctx: {}, gallery=lambda ctx, report: [],
        html=lambda report, gallery: "<p>toy kind</p>", summary_lines=lines, list_headline=None,
        train_after=None, inspect_check=None)
''')


def test_a_kind_from_another_package_runs_end_to_end(tmp_path):
    site = tmp_path / "site"
    (site / "toy_kind").mkdir(parents=True)
    (site / "toy_kind" / "__init__.py").write_text("")
    (site / "toy_kind" / "kind.py").write_text(KIND_MODULE)
    dist = site / "toy_kind-0.1.dist-info"  # what installing a package with the entry point leaves
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-kind\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dejavu_study.kinds]\ntoy_kind = toy_kind.kind\n")
    before = subprocess.check_output(["git", "status", "--porcelain"], cwd=ROOT, text=True)

    run = subprocess.run([sys.executable, "-m", "study.cli", "run", "configs/tiny.yaml", "--output",
                          str(tmp_path / "runs"), "--set", "study=toy_kind"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": f"{site}:{ROOT}"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "study tiny (toy_kind)" in run.stdout
    assert "nearest-neighbour label agreement" in run.stdout
    (report_json,) = (tmp_path / "runs").glob("tiny/run-*/report/report.json")
    report = json.loads(report_json.read_text())
    assert report["study"] == "toy_kind"
    keys = {f"{space}/{model}/{split}" for space in ("projector", "backbone") for model in ("model_a", "model_b")
            for split in ("target", "reference", "holdout")}
    assert set(report["results"]) == keys
    assert all(0 <= v["agreement"] <= 1 and v["n"] > 0 for v in report["results"].values())
    assert subprocess.check_output(["git", "status", "--porcelain"], cwd=ROOT, text=True) == before

    listed = subprocess.run([sys.executable, "-m", "study.cli", "report", "list", str(tmp_path / "runs")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": f"{site}:{ROOT}"})
    assert listed.returncode == 0 and "toy_kind" in listed.stdout, listed.stderr


def test_an_unknown_kind_names_the_installed_ones(tmp_path):
    from study.errors import ConfigError
    from study.frame.kinds import get_kind

    try:
        get_kind("no_such_kind")
    except ConfigError as exc:
        assert "ssl_dejavu" in str(exc) and "sslmem" in str(exc) and "vlm_dejavu" in str(exc)
    else:
        raise AssertionError("an unknown kind was accepted")
