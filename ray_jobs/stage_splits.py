"""Ray job entry point for the stages up to ``splits`` (earlier ones run first unless finished):
``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/stage_splits.py CONFIG [--output URI] [--set K=V ...]``."""
from _entry import stage_main

if __name__ == "__main__":
    stage_main("splits")
