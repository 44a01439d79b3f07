"""Ray job entry point for a whole study:
``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/run_study.py CONFIG [--output URI] [--set K=V ...]``.

Takes the same arguments as ``dejavu run``; inside a job, the study joins the job's cluster.
Resubmitting the same command after a failure resumes from the last finished stage.
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
