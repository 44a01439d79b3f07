"""Ray job entry point for the stages up to ``embed`` (earlier ones run first unless finished):
``ray job submit --working-dir . -- <venv>/bin/python ray_jobs/stage_embed.py CONFIG [--output URI] [--set K=V ...]``."""
from _entry import stage_main

if __name__ == "__main__":
    stage_main("embed")
