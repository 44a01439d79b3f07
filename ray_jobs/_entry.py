"""Shared by the job entry points: import the package from the job's working directory (a copy
of the repository) and run the command line's ``run`` with an optional last stage.

Every entry point takes what ``dejavu run`` takes (CONFIG, ``--output URI``, ``--set KEY=VALUE``)
and exits non-zero with one ``error:`` line when the study cannot go on.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(argv: list[str], until: str | None = None) -> int:
    from study.cli import main

    return main(["run", *argv, *(["--until", until] if until else [])])


def stage_main(until: str) -> None:
    """A stage's entry point: the stages up to ``until`` (finished ones reused), then exit."""
    sys.exit(run(sys.argv[1:], until))
