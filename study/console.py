"""What a user sees, and what a run keeps: the product's logging.

Every module logs through ``logging.getLogger(__name__)`` (all below the ``study`` logger); a
stage's progress goes through ``RunContext.log``, which adds the stage's name, the sweep setting
and the seconds since the run started to the record. Nothing here runs on import: the command
line calls ``configure`` (and ``study.run`` does when the user's program configured no logging),
so the product never changes a logging set-up it did not make.

- ``configure(verbosity)``: the console handler on the ``study`` logger, in the format users know
  (``[   42.5s] measure  done in 1.0 s``); -1 shows warnings only (``--quiet``), 1 adds the debug
  lines (``--verbose``).
- ``RunLog``: every record of a run that reaches the ``study`` logger (all of them, debug lines
  included, once ``configure`` ran), with its time, kept for ``run.log`` under the run directory
  (written after each stage and when the run ends, on object storage too: a post-mortem of a job
  whose console is gone).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

ROOT = "study"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class StageFormatter(logging.Formatter):
    """``[elapsed] stage    [setting] message`` for a stage's records; other records as
    ``message`` (information) or ``warning: message``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        stage = getattr(record, "stage", None)
        if stage is not None:
            where = f"[{record.setting}] " if getattr(record, "setting", "") else ""
            return f"[{record.elapsed:7.1f}s] {stage:<8} {where}{message}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


BAR = 24  # characters of a progress bar


def progress_bar(record: logging.LogRecord) -> str:
    """``[elapsed] stage    [#######.....] 393/1000 records  39/s  ETA 15 s`` for a record with
    ``progress`` = (done, total, unit)."""
    done, total, unit = record.progress
    rate = done / record.elapsed if record.elapsed > 0 else 0.0
    filled = int(BAR * min(1.0, done / total)) if total else 0
    eta = f"  ETA {(total - done) / rate:.0f} s" if total and rate > 0 and done < total else ""
    where = f"[{record.setting}] " if getattr(record, "setting", "") else ""
    return (f"[{record.elapsed:7.1f}s] {record.stage:<8} {where}[{'#' * filled}{'.' * (BAR - filled)}] "
            f"{done}/{total or '?'} {unit}  {rate:.0f}/s{eta}")


class _Console(logging.StreamHandler):
    """The handler ``configure`` installs (found again by its type, so configuring twice does not
    print twice). In an interactive terminal a record with ``progress`` redraws one bar line in
    place (records/s, ETA) until the next line; elsewhere (Ray jobs, CI, a file) it is a plain line."""

    open_bar = False
    follow_stdout = False  # write to sys.stdout as it is at each record (it may be replaced)

    def emit(self, record: logging.LogRecord) -> None:
        if self.follow_stdout:  # the terminal itself where the command line sorts its console
            self.stream = getattr(sys.stdout, "passthrough", sys.stdout)
        try:
            interactive = self.stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            interactive = False
        if getattr(record, "progress", None) and interactive:
            try:
                self.stream.write("\r\x1b[K" + progress_bar(record))
                self.flush()
                self.open_bar = True
            except Exception:
                self.handleError(record)
            return
        if self.open_bar:  # the next line takes the bar's place
            self.stream.write("\r\x1b[K")
            self.open_bar = False
        super().emit(record)


def configure(verbosity: int = 0, stream=None) -> None:
    """Show the product's records on the console (stdout unless ``stream``) at ``verbosity``."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG)  # every record reaches run.log; the console shows what verbosity asks
    for handler in [h for h in logger.handlers if isinstance(h, _Console)]:
        logger.removeHandler(handler)
    handler = _Console(stream or sys.stdout)
    handler.follow_stdout = stream is None
    handler.setLevel(LEVELS[max(-1, min(1, verbosity))])
    handler.setFormatter(StageFormatter())
    logger.addHandler(handler)
    logger.propagate = False  # the console handler shows them; a root handler would repeat them


def configured() -> bool:
    """Whether anything shows the product's records: its own console, or the program's logging."""
    logger = logging.getLogger(ROOT)
    return bool(logger.handlers) or bool(logging.getLogger().handlers)


class RunLog(logging.Handler):
    """Every record of the ``study`` logger while a run is under way, as lines for ``run.log``."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(StageFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        self.lines.append(f"{stamp} {record.levelname:<7} {record.name}: {self.format(record)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n" if self.lines else ""


_stage_sinks: list[Callable[[str, str], None]] = []
_last_sink: list[Callable[[str, str], None]] = []  # the run's most recent stage's, once it ended


@contextlib.contextmanager
def stage_lines(sink: Callable[[str, str], None]) -> Iterator[None]:
    """While a stage runs, the lines its workers write for the console (``[train model_a] ...``,
    which Ray forwards and ``study.console_streams`` picks out) go to ``sink(stage, text)``; a
    line Ray forwards after the stage ended (a task returns before its last lines reach the
    driver) goes there too, until the next stage starts."""
    _stage_sinks.append(sink)
    try:
        yield
    finally:
        _stage_sinks.remove(sink)
        _last_sink[:] = [sink]


def forwarded(stage: str, text: str) -> None:
    """A worker's line for the console: the running (or the last) stage's own line, else a plain one."""
    sinks = _stage_sinks or _last_sink
    if sinks:
        sinks[-1](stage, text)
    else:
        logging.getLogger(f"{ROOT}.worker").info(f"[{stage}] {text}")
