"""Stage ``measure``: the study kind's measurement (``StudyKind.measure``) over the search stage's
neighbours, written to ``measure/results.json``; what is measured is the kind's own (its package
under ``study/kinds/``)."""
from __future__ import annotations

from study.frame.context import RunContext
from study.frame.kinds import get_kind


def run_measure(ctx: RunContext) -> dict:
    return get_kind(ctx.cfg.study).measure(ctx)
