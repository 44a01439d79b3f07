"""Ray job entry point for the stages up to ``train`` (earlier ones run first unless finished):
``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/stage_train.py CONFIG [--output URI] [--set K=V ...]``."""
from _entry import stage_main

if __name__ == "__main__":
    stage_main("train")
