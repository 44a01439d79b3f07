"""``dejavu report pull`` and ``dejavu report list`` on run directories laid out by the product's own
helpers (config, run id, stage directories, markers), with report files written by hand in the
shape ``study.stages.report`` gives them: no training, locally and on a real S3 server.
"""
from __future__ import annotations

import os
import random

import pytest

from study import storage
from study.cli import main
from study.config_load import config_to_dict, load_config
from study.frame.context import SHARED_STAGES, RunContext, write_marker
from study.frame.runner import STAGE_NAMES
from study.frame.sweep import settings_of
from test_object_storage import local_or_s3, s3_env  # noqa: F401  (s3_env: the local S3 server fixture)

SWEEP = "sweep={train.text_randomization.p: [0.0, 0.1]}"


def _est(value: float) -> dict:
    return {"value": value, "ci": [value - 0.05, value + 0.05], "p_value": 0.0005}


def ssl_report(ctx: RunContext) -> dict:
    gap = {"target": 0.25, "reference": 0.125, "gap": 0.125, "ci": [0.05, 0.2], "p_value": 0.004}
    return {"study": "ssl_dejavu", "name": ctx.cfg.name, "run_dir": ctx.run_dir, "created": "2026-01-02T03:04:05+00:00",
            "splits": {"counts": {"target": 40, "reference": 40, "public": 100}},
            "headline": {"projector/positive": gap, "projector/null": {**gap, "gap": -0.01, "p_value": 0.8}},
            "k": 10, "metric": "l2_normalized", "crop_rule": {"rule": "background"}, "config": config_to_dict(ctx.cfg)}


def vlm_sweep_report(ctx: RunContext) -> dict:
    def headline(ppg: float) -> dict:
        return {"caption_to_image/positive/k=10": {"ppg": _est(ppg), "prg": _est(ppg), "aucg": _est(ppg / 2)}}

    settings = [{"name": name, "value": value, "headline": headline(ppg)}
                for (name, _), value, ppg in zip(settings_of(ctx.cfg), [0.0, 0.1], [0.101, 0.089])]
    return {"study": "vlm_dejavu", "name": ctx.cfg.name, "run_dir": ctx.run_dir, "created": "2026-01-02T03:04:05+00:00",
            "splits": {"counts": {"target": 40, "reference": 40, "public": 100}},
            "sweep": {"key": "train.text_randomization.p", "settings": settings},
            "headline": settings[0]["headline"], "ks": [1, 10], "metric": "l2_normalized",
            "headline_key": "k=10/top_n/unnamed", "config": config_to_dict(ctx.cfg)}


def make_run(output: str, name: str, *overrides: str, until: str | None = None, settings_done: int = 99,
             report=None) -> RunContext:
    """A run whose stages up to ``until`` have their markers (a sweep's per-setting stage only in
    its first ``settings_done`` settings); with ``report`` (a function of the context), its report
    directory: report.json, report.html, a nested file, the report marker."""
    cfg = load_config(None, [f"output={output}", f"name={name}", *overrides])
    ctx = RunContext.create(cfg)
    storage.write_json(storage.join(ctx.run_dir, "config.json"), config_to_dict(cfg))
    stages = STAGE_NAMES[: STAGE_NAMES.index(until) + 1] if until else STAGE_NAMES
    for stage in stages:
        if stage == "report" or (stage == "annotate" and not cfg.annotate.on):
            continue
        if stage in SHARED_STAGES:
            write_marker(ctx.stage_dir(stage), "h", {}, 1.0)
            continue
        for setting, scfg in settings_of(cfg)[:settings_done]:
            write_marker((ctx.for_setting(scfg, setting) if setting else ctx).stage_dir(stage), "h", {}, 1.0)
    if report:
        rng = random.Random(name)
        storage.write_bytes(ctx.report_html, b"<html>" + bytes(rng.randrange(256) for _ in range(70_000)))
        # Today's page inlines its plots; pull copies whatever the directory holds.
        storage.write_bytes(ctx.stage_dir("report", "plots", "curve.png"), bytes(rng.randrange(256) for _ in range(5000)))
        storage.write_json(ctx.report_json, report(ctx))
        write_marker(ctx.stage_dir("report"), "h", {}, 1.0)
    return ctx


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(result: tuple[int, str, str], fragment: str) -> None:
    rc, _, err = result
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and fragment in err, err


def assert_same_report(src_report_dir: str, dest: str) -> None:
    names = sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs)
    assert names == ["plots/curve.png", "report.html", "report.json"]  # the marker stays behind
    for name in names:
        assert storage.read_bytes(os.path.join(dest, name)) == storage.read_bytes(storage.join(src_report_dir, name))


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    return local_or_s3(request, tmp_path, "out")


def test_pull_copies_the_report_byte_for_byte(output, tmp_path, capsys, monkeypatch):
    ctx = make_run(output, "ssl", report=ssl_report)
    report_dir = ctx.stage_dir("report")
    rc, out, _ = cli(capsys, "report", "pull", ctx.run_dir, str(tmp_path / "given"))
    assert rc == 0 and "pulled 3 files" in out and str(tmp_path / "given") in out
    assert_same_report(report_dir, str(tmp_path / "given"))
    # From report.json itself, to the default destination: <name>/<run id>/report in the working directory.
    monkeypatch.chdir(tmp_path)
    rc, out, _ = cli(capsys, "report", "pull", ctx.report_json)
    default = tmp_path / "ssl" / os.path.basename(ctx.run_dir) / "report"
    assert rc == 0 and str(default) in out
    assert_same_report(report_dir, str(default))
    # The copy is a report like any other.
    rc, out, _ = cli(capsys, "report", str(default))
    assert rc == 0 and "study ssl (ssl_dejavu)" in out


def test_pull_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    done = make_run(out, "ssl", report=ssl_report)
    half = make_run(out, "half", until="train")
    dest = tmp_path / "dest"
    assert_one_line_error(cli(capsys, "report", "pull", half.run_dir, str(dest)), "no report.json found")
    assert not dest.exists()
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    assert_one_line_error(cli(capsys, "report", "pull", done.run_dir, str(dest)), "already holds files")
    assert (dest / "stale.txt").read_text() == "old"
    rc, out, _ = cli(capsys, "report", "pull", done.run_dir, str(dest), "--overwrite")
    assert rc == 0 and not (dest / "stale.txt").exists()
    assert_same_report(done.stage_dir("report"), str(dest))
    inside = storage.join(done.stage_dir("report"), "copy")
    assert_one_line_error(cli(capsys, "report", "pull", done.run_dir, inside, "--overwrite"), "overlaps")
    assert_one_line_error(cli(capsys, "report", "pull", done.run_dir, done.run_dir, "--overwrite"), "overlaps")
    with pytest.raises(SystemExit) as exc:  # argparse: usage and one error line, status 2
        main(["report", "pull"])
    assert exc.value.code == 2


def s3_calls(monkeypatch) -> list[str]:
    """The names of the S3 requests made from now on."""
    import s3fs

    calls, call = [], s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append(method)
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return calls


def test_list_shows_each_runs_state_and_numbers(output, capsys, monkeypatch):
    ssl = make_run(output, "ssl", report=ssl_report)
    sweep = make_run(output, "vlm", "study=vlm_dejavu", SWEEP, report=vlm_sweep_report)
    half = make_run(output, "half", until="train")
    partial = make_run(output, "partial", "study=vlm_dejavu", SWEEP, until="embed", settings_done=1)
    calls = s3_calls(monkeypatch) if output.startswith("s3://") else []
    rc, out, _ = cli(capsys, "report", "list", output)
    assert rc == 0
    if output.startswith("s3://"):  # one listing, then one read per run (report.json, else config.json);
        # before them the check that the prefix exists (a HEAD and a one-page listing), whatever it holds
        assert sorted(calls) == ["get_object"] * 4 + ["head_object"] + ["list_objects_v2"] * 2, calls
    lines = out.splitlines()
    assert lines[-1] == f"4 runs under {output}: 2 finished, 2 unfinished"
    by_run = {}
    for line in lines[:-1]:
        if not line.startswith(" "):
            current = line.split()[0]
        by_run.setdefault(current, []).append(line.strip())
    assert sorted(by_run) == sorted(r.run_dir for r in (ssl, sweep, half, partial))
    assert "ssl_dejavu  finished (all stages)" in by_run[ssl.run_dir][0]
    assert by_run[ssl.run_dir][1] == "gap  projector/positive +0.125 (p 0.0040)  projector/null -0.010 (p 0.8000)"
    assert "vlm_dejavu  finished (all stages)" in by_run[sweep.run_dir][0]
    assert by_run[sweep.run_dir][1] == "PPG caption_to_image/positive/k=10:  p=0.0 +0.101  p=0.1 +0.089"
    assert by_run[half.run_dir] == [by_run[half.run_dir][0]]  # no report, no numbers
    assert "unfinished after train (data splits train)" in by_run[half.run_dir][0]
    assert "unfinished after splits (data splits train 1/2 embed 1/2)" in by_run[partial.run_dir][0]
    assert all(line.endswith(" UTC") for line in lines[:-1] if not line.startswith(" "))
    # A run directory itself lists just that run.
    rc, out, _ = cli(capsys, "report", "list", half.run_dir)
    assert rc == 0 and out.splitlines()[-1] == f"1 runs under {half.run_dir}: 0 finished, 1 unfinished"


def test_list_time_is_the_newest_marker_or_report(tmp_path, capsys):
    ctx = make_run(str(tmp_path), "half", until="splits")
    for i, (d, _, files) in enumerate(sorted(os.walk(ctx.run_dir))):
        for f in files:
            os.utime(os.path.join(d, f), (0, 1_700_000_000 + 60 * i))  # 2023-11-14 22:13 UTC onwards
    rc, out, _ = cli(capsys, "report", "list", str(tmp_path))
    assert rc == 0 and "2023-11-14 22:15 UTC" in out  # the newest of config.json and two markers


def test_list_and_report_errors(tmp_path, capsys):
    assert_one_line_error(cli(capsys, "report", "list", str(tmp_path / "nothing")), "no runs under")
    ctx = make_run(str(tmp_path), "ssl", report=ssl_report)
    rc, out, _ = cli(capsys, "report", ctx.run_dir)  # the summary, as before pull and list existed
    assert rc == 0 and out.splitlines()[0] == "study ssl (ssl_dejavu)"
    storage.write_bytes(ctx.report_json, b"{not json")
    rc, out, _ = cli(capsys, "report", "list", str(tmp_path))
    assert rc == 0 and "report.json could not be read" in out
