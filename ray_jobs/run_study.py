"""Ray job entry point: ``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/run_study.py CONFIG [...]``.

Takes the same arguments as ``dejavu run``; inside a job, the study joins the job's cluster.
"""
from __future__ import annotations

import os
import sys

# The job's working directory is a copy of the repository: import the package from it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.cli import main  # noqa: E402


def run(argv: list[str]) -> int:
    return main(["run", *argv])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
