"""Stage ``measure``: the study kind's measurement (``StudyKind.measure``) over the search stage's
neighbours, written to ``measure/results.json``; what is measured is the kind's own (its package
under ``study/kinds/``).

Also what the kinds' one-model tests share: their sides (``ONE_MODEL_CONTROLS``, the two-model
test's with a model-free predictor or a retriever in the reference's place) and their file,
``measure/one_model.json``.
"""
from __future__ import annotations

from study import storage
from study.frame.context import RunContext
from study.frame.kinds import get_kind

PREDICTOR = "predictor"  # the reference's place in a one-model test's sides
ONE_MODEL = "one_model.json"
# As the two-model controls (``study.frame.kinds.CONTROLS``): the positive control holds model A's
# outcomes on its own training records (target) and model B's on its own (reference), the null
# control the two halves of the holdout; the predictor stands on the other side of each.
ONE_MODEL_CONTROLS = {
    "positive": [("a", "target", "model_a", PREDICTOR), ("b", "reference", "model_b", PREDICTOR)],
    "null": [("a", "holdout", "model_a", PREDICTOR), ("b", "holdout", "model_b", PREDICTOR)],
}


def run_measure(ctx: RunContext) -> dict:
    return get_kind(ctx.cfg.study).measure(ctx)


def write_one_model(ctx: RunContext, results: dict) -> None:
    storage.write_json(ctx.stage_dir("measure", ONE_MODEL), results)


def read_one_model(ctx: RunContext) -> dict | None:
    uri = ctx.stage_dir("measure", ONE_MODEL)
    return storage.read_json(uri) if storage.exists(uri) else None
