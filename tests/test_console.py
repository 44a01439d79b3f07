"""The product's logging: the console format users know, --quiet and --verbose, and run.log under
the run directory with every line of every attempt."""
from __future__ import annotations

import io
import logging

import pytest

from test_cli_errors import dejavu_here

from study import console


@pytest.fixture(autouse=True)
def product_logger():
    """Each test configures the ``study`` logger as a command would; put it back afterwards."""
    logger = logging.getLogger("study")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


def _record(msg: str, level: int = logging.INFO, **extra) -> logging.LogRecord:
    record = logging.LogRecord("study.run", level, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def test_the_console_format():
    fmt = console.StageFormatter()
    assert fmt.format(_record("done in 1.0 s", stage="measure", setting="", elapsed=42.5)) == \
        "[   42.5s] measure  done in 1.0 s"
    assert fmt.format(_record("starting", stage="train", setting="p=0.1", elapsed=3.0)) == \
        "[    3.0s] train    [p=0.1] starting"
    assert fmt.format(_record("plain")) == "plain"
    assert fmt.format(_record("careful", logging.WARNING)) == "warning: careful"


def test_configuring_twice_shows_each_line_once(capsys):
    console.configure(0)
    console.configure(0)
    log = logging.getLogger("study.somewhere")
    log.info("once")
    log.debug("hidden")
    assert capsys.readouterr().out == "once\n"
    console.configure(1)
    log.debug("now shown")
    console.configure(-1)
    log.info("hidden again")
    log.warning("still shown")
    assert capsys.readouterr().out == "now shown\nwarning: still shown\n"


def test_quiet_run_log_and_a_rerun_adding_to_it(ray_local, capsys, tmp_path):
    out = str(tmp_path / "runs")
    quiet = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", out, "--until", "splits", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "splits   done" not in quiet.stdout and "finished the stages up to splits" in quiet.stdout
    (log,) = (tmp_path / "runs").glob("tiny/run-*/run.log")
    first = log.read_text()
    assert "data     starting" in first and "splits   done in" in first  # every line, though not shown

    loud = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", out, "--until", "splits")
    assert loud.returncode == 0 and "splits   reusing finished stage" in loud.stdout
    second = log.read_text()
    assert second.startswith(first) and "splits   reusing finished stage" in second[len(first):]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_in_a_terminal_and_lines_elsewhere(terminal):
    stream = _Terminal() if terminal else io.StringIO()
    console.configure(0, stream)
    log = logging.getLogger("study.run")
    for done in (250, 500):
        log.info(f"embedded {done} records so far", extra={"stage": "embed", "setting": "", "elapsed": 10.0 * done / 250,
                                                          "progress": (done, 1000, "records")})
    log.info("embedded 1000 records into 2 files", extra={"stage": "embed", "setting": "", "elapsed": 40.0})
    text = stream.getvalue()
    if terminal:  # one line redrawn in place, then replaced by the next line
        assert text.count("\n") == 1 and text.endswith("[   40.0s] embed    embedded 1000 records into 2 files\n")
        assert "\r\x1b[K[   20.0s] embed    [############............] 500/1000 records  25/s  ETA 20 s" in text
    else:
        assert text.splitlines() == ["[   10.0s] embed    embedded 250 records so far",
                                     "[   20.0s] embed    embedded 500 records so far",
                                     "[   40.0s] embed    embedded 1000 records into 2 files"]
