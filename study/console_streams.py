"""The command line's console: the product's lines on the terminal, Ray's in ``run.log``.

Ray writes into the console of the process that drives it: lines its log monitor forwards from
workers and actors (``(RayTrainWorker pid=123) ...``, ``(raylet) ...``, Ray Train's own actors'
tracebacks when another Ray instance runs on the machine), the C++ core's lines (written by the
driver's core worker straight to file descriptor 2) and its Python loggers' lines. ``routed``
sorts what reaches the ``dejavu`` command's stdout and stderr while it runs: those lines go to the
``study.ray`` logger at debug level (``run.log`` keeps them, ``--verbose`` shows them), a
training worker's progress line (``[train model_a] epoch 2/60 ...``, forwarded by Ray) becomes
the stage's own line, and everything else passes through unchanged. Only the command line does
this: a program that imports ``study`` keeps its console as it set it up.

Ray offers no hook for where its driver prints (its printer looks up ``sys.stdout`` and
``sys.stderr`` at each line, and the C++ core writes to the descriptor), so both are wrapped here.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import select
import sys
import threading
from typing import Callable

from study import console

LOG = logging.getLogger("study.ray")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# Ray's log monitor: "(Name pid=12, ip=10.0.0.2) text", "(raylet) text", "(autoscaler +1m3s) text";
# an actor's name may hold parentheses ("MapWorker(MapBatches(_Replica))").
FORWARDED = re.compile(r"^\((?P<who>(?:[^()]|\((?:[^()]|\([^()]*\))*\))*?"
                       r"(?:pid=\w+|raylet|gcs_server|monitor|autoscaler[^()]*)(?:, ip=[\w.:]+)?)\) ?(?P<text>.*)$", re.S)
# The C++ core ("[2026-12-06 13:01:21,282 E 7959 7959] core_worker.cc:2465: ...") and Ray's Python
# loggers ("2026-12-06 13:00:51,613\tWARNING worker.py:85 -- ...").
CORE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] \S+:\d+: ")
RAY_PYTHON = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+:\d+ -- ")
# A worker's own progress line, as the training loop writes it.
STAGE_LINE = re.compile(r"^\[(?P<stage>[a-z]+) (?P<text>.*)$", re.S)


def sort_line(line: str) -> tuple[str, str] | None:
    """``("ray", text)`` for a line of Ray's, ``(stage, text)`` for a product line a worker wrote
    that Ray forwarded, None for any other line (shown as it is)."""
    plain = _COLOUR.sub("", line)
    forwarded = FORWARDED.match(plain)
    if forwarded:
        own = STAGE_LINE.match(forwarded["text"])
        return (own["stage"], own["text"].replace("] ", " ", 1)) if own else ("ray", plain)
    if CORE.match(plain) or RAY_PYTHON.match(plain):
        return ("ray", plain)
    return None


def _divert(found: tuple[str, str]) -> None:
    stage, text = found
    if stage == "ray":
        LOG.debug(text.rstrip("\n"))
    else:
        console.forwarded(stage, text.rstrip("\n"))


class _Router(io.TextIOBase):
    """A text stream in place of ``sys.stdout``/``sys.stderr``: each complete piece of writing (a
    line, or a logging record with its traceback) is sorted by its first line."""

    def __init__(self, real):
        self.passthrough = real  # the terminal (the console handler writes here directly)
        self._held = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._held += text
            cut = self._held.rfind("\n") + 1
            if cut:
                piece, self._held = self._held[:cut], self._held[cut:]
                found = sort_line(piece)
                if found is None:
                    self.passthrough.write(piece)
                else:
                    _divert(found)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._held:  # a partial line flushed on purpose (a prompt, a progress bar)
                self.passthrough.write(self._held)
                self._held = ""
            self.passthrough.flush()

    def isatty(self) -> bool:
        return self.passthrough.isatty()

    def fileno(self) -> int:
        return self.passthrough.fileno()

    @property
    def encoding(self):
        return self.passthrough.encoding

    def writable(self) -> bool:
        return True


class _Descriptor:
    """File descriptor 2 through a pipe that a thread reads, line by line: the C++ core's lines
    are diverted, the rest written to the real descriptor."""

    def __init__(self, fd: int = 2):
        self.fd = fd
        self.real = os.dup(fd)
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="dejavu-console", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        held = b""
        while True:
            ready, _, _ = select.select([self.read_end], [], [], 0.1)
            chunk = os.read(self.read_end, 65536) if ready else b""
            if not chunk and self._stop.is_set():
                break  # processes started meanwhile may keep the pipe open: stop when it is quiet
            held += chunk
            *lines, held = held.split(b"\n")
            for line in lines:
                self._one(line + b"\n")
        if held:
            self._one(held)

    def _one(self, raw: bytes) -> None:
        found = sort_line(raw.decode(errors="replace"))
        if found is None:
            os.write(self.real, raw)
        else:
            _divert(found)

    def close(self) -> None:
        os.dup2(self.real, self.fd)  # the pipe's write end closes with it (here; started processes keep theirs)
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.real)
        os.close(self.read_end)


@contextlib.contextmanager
def routed(before_exit: Callable[[], None] | None = None):
    """Sort the process's console while the block runs (see the module's doc); ``before_exit``
    runs inside it at the end (the command line stops Ray there, so its last lines are sorted too)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = sys.stdout, sys.stderr
    real_err = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
    descriptor = _Descriptor(2)
    sys.stdout, sys.stderr = _Router(saved[0]), _Router(real_err)
    try:
        yield
        if before_exit is not None:
            before_exit()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        sys.stdout, sys.stderr = saved
        descriptor.close()
        real_err.close()
