"""Fault injection for the product's own tests: ``DEJAVU_FAULTS="name=value,name=value"``.

Nothing here is set in normal use. The faults live in the environment, not in the study config,
so a command rerun without them has the same config hash and resumes what the faulty run left.
Known names:

- ``fail_before_stage=NAME``: the stage runner stops with an error just before stage NAME runs
  (a job that fails midway; its finished stages stay reusable).
- ``kill_train_worker=EPOCH``: a training worker of rank 0 exits abruptly midway through epoch
  EPOCH (1-based) unless it resumed from a checkpoint (so it fires once per fit); Ray Train
  restarts the worker group (Ray reruns a fit's own task) from the last checkpoint.
- ``pause_train_epoch=EPOCH:SECONDS``: every training worker waits SECONDS before epoch EPOCH
  (1-based) unless it resumed from a checkpoint: a window in which a test can take a node away
  while training is under way.
"""
from __future__ import annotations

import os

ENV = "DEJAVU_FAULTS"


def faults() -> dict[str, str]:
    """The faults asked for in the environment, name -> value."""
    out = {}
    for item in filter(None, (p.strip() for p in os.environ.get(ENV, "").split(","))):
        name, _, value = item.partition("=")
        out[name.strip()] = value.strip()
    return out


def fault(name: str) -> str | None:
    return faults().get(name)
