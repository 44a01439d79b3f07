"""Ray job entry point for the stages up to ``annotate`` (earlier ones run first unless finished; with no annotator configured, the data stage only):
``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/stage_annotate.py CONFIG [--output URI] [--set K=V ...]``."""
from _entry import stage_main

if __name__ == "__main__":
    stage_main("annotate")
