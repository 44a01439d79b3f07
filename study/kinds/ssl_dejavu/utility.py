"""Utility beside memorization in the SSL study: each model's linear-probe accuracy.

The probe (``study.train.probe``) trains on the first ``measure.utility_records`` labelled public
records in id order (neither model trained on them) and is scored on as many labelled holdout
records, per model and representation, with a bootstrap interval; chance is the most frequent
class's share among the scored records. Written to ``measure/utility.json``; the report shows it
beside the gaps.
"""
from __future__ import annotations

import numpy as np

from study import storage
from study.data.loading import load_inputs, read_split
from study.frame.context import RunContext
from study.data.model_input import ModelInput

UTILITY = "utility.json"


def _labelled(splits_dir: str, split: str, n: int) -> tuple[list[str], np.ndarray]:
    """The first ``n`` labelled records of a split in id order, and their labels."""
    ids, labels = read_split(splits_dir, split)  # sorted by id
    keep = labels >= 0
    return [str(i) for i in ids[keep][:n]], labels[keep][:n]


def measure_utility(ctx: RunContext, models) -> dict:
    out = _probe(ctx, models)
    storage.write_json(ctx.stage_dir("measure", UTILITY), out)
    return out


def _probe(ctx: RunContext, models) -> dict:
    from study.train.models import input_scaling, load_model
    from study.train.probe import accuracy_with_interval, features, fit_predict

    cfg = ctx.cfg
    if not ctx.uses("holdout"):
        return {"note": "no holdout split: the linear probe needs held-out labelled records"}
    import ray

    # A task reads the splits' ids and labels; the driver gets the probe's records alone (at most
    # measure.utility_records of each split).
    n = cfg.measure.utility_records
    labelled = ray.remote(num_cpus=1)(_labelled)
    (train_ids, train_y), (test_ids, test_y) = ray.get([labelled.remote(ctx.splits_dir, s, n) for s in ("public", "holdout")])
    num_classes = int(max(train_y.max(initial=-1), test_y.max(initial=-1))) + 1
    if len(set(train_y.tolist())) < 2 or not test_ids:
        return {"note": "the linear probe needs labelled public records of two classes and labelled holdout records"}
    inputs = ModelInput.of(cfg.data)
    images = load_inputs(ctx.data_root, train_ids + test_ids, inputs)
    train_im, test_im = inputs.stack([images[i] for i in train_ids]), inputs.stack([images[i] for i in test_ids])
    probe: dict = {}
    bare = ctx.without_projector()  # imported without projector weights: the backbone alone
    for model in models:
        encoder, meta = load_model(storage.read_bytes(ctx.model_file(model)))
        f_train = features(encoder, train_im, scale=input_scaling(meta))
        f_test = features(encoder, test_im, scale=input_scaling(meta))
        for rep in [r for r in f_train if r != "projector" or model not in bare]:
            predicted = fit_predict(f_train[rep], train_y, f_test[rep], num_classes)
            probe.setdefault(rep, {})[model] = accuracy_with_interval(
                predicted == test_y, cfg.measure.bootstrap, cfg.measure.confidence_level, cfg.measure.seed)
    return {"linear_probe": probe, "records": {"train": len(train_ids), "test": len(test_ids)},
            "chance": float(np.bincount(test_y).max() / len(test_y))}


def read_utility(ctx: RunContext) -> dict | None:
    uri = ctx.stage_dir("measure", UTILITY)
    return storage.read_json(uri) if storage.exists(uri) else None
