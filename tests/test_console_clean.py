"""The ``dejavu`` command's console shows the product's lines only: Ray's own lines (forwarded
worker lines, the C++ core's, Ray's Python loggers', Ray Train's tracebacks when a second Ray
instance runs on the machine) are in run.log, and the training workers' progress shows as the
train stage's own lines. Two studies at once (the ``tiny_pair`` fixture), each starting its own
Ray instance."""
from __future__ import annotations

import glob
import os
import re

from study.console_streams import sort_line

# What Ray's lines look like on a console, written out here independently of the product's patterns.
RAY_MARKS = ("pid=", "(raylet", "core_worker.cc", ".cc:", " -- ", "Traceback", "ConnectionError")
PRODUCT = re.compile(r"^\[\s*\d+\.\ds\] (study|data|splits|train|embed|search|measure|report)\s")


def test_two_studies_at_once_show_only_their_own_lines(tiny_pair):
    for run in tiny_pair:
        assert run.returncode == 0, run.stderr
        assert run.stderr == "", run.stderr  # nothing on stderr at all
        lines = run.stdout.splitlines()
        leaked = [ln for ln in lines if any(mark in ln for mark in RAY_MARKS)]
        assert not leaked, "\n".join(leaked)
        # Every line before the summary is a stage line; the workers' epochs are train lines.
        stage_lines = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("study tiny"))]
        assert all(PRODUCT.match(ln) for ln in stage_lines), "\n".join(ln for ln in stage_lines if not PRODUCT.match(ln))
        assert any("fitting model_a on target, model_b on reference concurrently" in ln for ln in stage_lines)
        for model in ("model_a", "model_b"):
            assert any(re.search(rf"\] train +{model} epoch 4/4 loss ", ln) for ln in stage_lines), run.stdout
    logs = [open(p).read() for run in tiny_pair for p in glob.glob(os.path.join(run.output, "tiny/run-*/run.log"))]
    assert len(logs) == 2
    for log in logs:
        assert "study.ray: " in log  # Ray's lines are kept for a post-mortem
        assert "Token authentication is enabled" in log or "core_worker.cc" in log or "(raylet)" in log, log


def test_sorting_of_lines():
    """Lines as Ray prints them (taken from a real console) against lines the product prints."""
    cyan, reset = "\x1b[36m", "\x1b[0m"
    ray_lines = [
        f"{cyan}(TrainController pid=8882){reset} [2026-12-06 13:01:10,022 E 8882 8938] core_worker.cc:2465: Actor ...",
        "[2026-12-06 13:01:21,282 E 7959 7959] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches(_Replica))'",
        "\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: 90ec",
        "(PlacementGroupCleaner pid=14540) Traceback (most recent call last):",
        "(MapWorker(MapBatches(_Replica)) pid=77, ip=10.0.0.3) some output",
        "(autoscaler +1m3s) Adding 1 node(s) of type worker.",
        "2026-12-06 13:00:51,613\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled",
    ]
    for line in ray_lines:
        found = sort_line(line + "\n")
        assert found is not None and found[0] == "ray", line
    worker = sort_line(f"{cyan}(RayTrainWorker pid=9070){reset} [train model_b] epoch 2/4 loss 4.6735 (0.49 s/epoch)\n")
    assert worker == ("train", "model_b epoch 2/4 loss 4.6735 (0.49 s/epoch)\n")
    for own in ("[   35.1s] measure  caption_to_image positive k=10 top_n unnamed objects: PPG +0.007",
                "error: data.path: no such input", "  projector/positive     target 0.062  reference 0.049",
                "report: /tmp/x/report.html", "(a note in parentheses) from the product"):
        assert sort_line(own + "\n") is None, own


def test_a_line_forwarded_after_its_stage_ended_is_still_that_stages():
    """Ray forwards a task's last lines after the task returned (a one-worker fit runs in a task):
    they go to the stage that just ended, as its own lines, until the next stage starts."""
    from study import console

    got = []
    with console.stage_lines(lambda stage, text: got.append(("first", stage, text))):
        console.forwarded("train", "model_a epoch 3/4 loss 1.0")
    console.forwarded("train", "model_b epoch 4/4 loss 0.9")  # late: between two stages
    with console.stage_lines(lambda stage, text: got.append(("second", stage, text))):
        console.forwarded("train", "model_a epoch 4/4 loss 0.8")  # late, the next stage under way
    assert got == [("first", "train", "model_a epoch 3/4 loss 1.0"), ("first", "train", "model_b epoch 4/4 loss 0.9"),
                   ("second", "train", "model_a epoch 4/4 loss 0.8")]
