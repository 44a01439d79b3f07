"""The one-model SSL test (docs/concepts/ssl-dejavu.md): the attacked model against a correlation predictor that
sees only what the crop shows, with no reference model.

The predictor is naive Bayes over the crop's tags (``study.core.naive_bayes``; tags from
``measure.one_model_tagger``, ``study.kinds.ssl_dejavu.taggers``): per-class tag counts over the public
records, then class scores per attacked record, ranked as the k-NN attack's votes are (confidence =
minus their entropy). Sides, as in the two-model test (``study.core.metrics``), with the predictor
in the reference's place: the positive control holds model A's k-NN outcomes on its own training
records (target) and model B's on its own (reference); the null control the two halves of the
holdout. The gap is k-NN accuracy minus the predictor's, with the same intervals, p-values and
ranking of memorized records (k-NN right, predictor wrong, by confidence difference).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from study import storage
from study.core.naive_bayes import TagCounts, probabilities, published_scores
from study.data import records
from study.data.loading import read_split
from study.frame.context import RunContext
from study.kinds.ssl_dejavu.outcomes import write_predicted
from study.kinds.ssl_dejavu.taggers import COLUMNS, TAGGERS
from study.data.model_input import ModelInput

CROP_BATCH = 256  # records per batch of the crop classifier's pass
CROP_CLASSIFIER = "crop_classifier"  # the train stage's model dir of the crop classifier
def _tags(ctx: RunContext, ids) -> list[list[str]]:
    name = ctx.cfg.measure.one_model_tagger
    column = COLUMNS[name]
    table = records.read_records(ctx.data_root, [str(i) for i in ids], columns=["id", column])
    by_id = dict(zip(table.column("id").to_pylist(), map(TAGGERS[name], table.column(column).to_pylist())))
    return [by_id.get(str(i), []) for i in ids]


def predictor_dir(ctx: RunContext, name: str, split: str) -> str:
    """Where a predictor's outcomes on one split are written (the k-NN outcomes' layout, no space)."""
    return ctx.stage_dir("measure", "outcomes", name, split)


def predictors(ctx: RunContext, splits, num_classes: int) -> dict[str, dict[str, int]]:
    """Run the predictors this study has on the attacked ``splits`` and write their outcomes
    (``predictor_dir``); returns {predictor: {split: records scored}}. The measure stage runs it
    in a task: the class scores stay there."""
    out = {}
    for name, scores in (("naive_bayes", naive_bayes_outcomes(ctx, splits, num_classes)),
                         (CROP_CLASSIFIER, crop_classifier_outcomes(ctx, splits))):
        if scores:
            out[name] = {split: write_predicted(predictor_dir(ctx, name, split), *got) for split, got in scores.items()}
    return out


def crop_classifier_outcomes(ctx: RunContext, splits) -> dict | None:
    """{split: (ids, labels, class probabilities)} of the crop classifier (trained by the train stage when
    ``train.crop_classifier``) on each attacked split's labelled, croppable records: one pass over
    the record shards in batches (the split plan picks each batch's attacked records, as every
    stage does), so the driver holds class scores, never the splits' images."""
    if not ctx.cfg.train.crop_classifier:
        return None
    import torch

    from study.embed.views import labelled_crops
    from study.train import layout
    from study.train.models import load_model, normalize

    model, _ = load_model(storage.read_bytes(ctx.stage_dir("train", CROP_CLASSIFIER, layout.MODEL)))
    plan = ctx.split_plan()
    columns = list(dict.fromkeys(["id", "image", "width", "height", "label", "boxes", *plan.columns()]))
    got: dict[str, tuple[list, list, list]] = {split: ([], [], []) for split in splits}
    for batch in records.dataset(ctx.data_root).to_batches(columns=columns, batch_size=CROP_BATCH):
        batch = pa.Table.from_batches([batch])
        split_of = plan.assign(batch)
        for split in splits:
            ids, crops, labels = labelled_crops(batch.filter(pa.array(split_of == split)), ctx.cfg.embed.crop,
                                                ModelInput.of(ctx.cfg.data))
            if not ids:
                continue
            with torch.inference_mode():
                _, logits = model(normalize(torch.from_numpy(crops)))
            for part, value in zip(got[split], (ids, labels, torch.softmax(logits.float(), dim=1).numpy())):
                part.append(value)
    out = {}
    for split, (ids, labels, probs) in got.items():
        p = np.concatenate(probs) if probs else np.zeros((0, model.projector.out_features))
        out[split] = (np.asarray([i for part in ids for i in part], dtype=str),
                      np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64), p)
    return out


def naive_bayes_outcomes(ctx: RunContext, splits, num_classes: int) -> dict | None:
    """{split: (ids, labels, class probabilities)} of the naive-Bayes predictor on each attacked split's labelled records, or
    None when it is off or no public record has a tag (nothing to learn a correlation from)."""
    if not ctx.cfg.measure.one_model_tagger:
        return None
    table = _public_tag_counts(ctx, num_classes)
    if not table.vocab:
        return None
    out = {}
    for split in splits:
        ids, labels = read_split(ctx.splits_dir, split)
        keep = labels >= 0
        ids, labels = ids[keep].astype(str), labels[keep]
        tags = _tags(ctx, ids)
        if ctx.cfg.measure.one_model_naive_bayes == "published":  # the top class's joint probability ranks
            scores = published_scores(table, tags)
            out[split] = (ids, labels, scores, scores.max(axis=1) if len(scores) else np.zeros(0))
        else:
            out[split] = (ids, labels, probabilities(table, tags, ctx.cfg.measure.one_model_alpha))
    return out


def _public_tag_counts(ctx: RunContext, num_classes: int) -> TagCounts:
    """Per-class tag counts of the public records, from one pass over the record shards (the split
    plan picks the public ones, as every stage does)."""
    name = ctx.cfg.measure.one_model_tagger
    plan = ctx.split_plan()
    columns = list(dict.fromkeys(["id", "label", COLUMNS[name], *plan.columns()]))
    table = TagCounts.empty(num_classes)
    for batch in records.dataset(ctx.data_root).to_batches(columns=columns):
        batch = pa.Table.from_batches([batch])
        public = plan.assign(batch) == "public"
        labels = np.where(public, batch.column("label").fill_null(-1).to_numpy(zero_copy_only=False), -1)
        table.add(map(TAGGERS[name], batch.column(COLUMNS[name]).to_pylist()), labels.astype(np.int64))
    return table


def train_crop_classifier(ctx: RunContext, manifest: dict, digest: str, summary: dict) -> None:
    """``StudyKind.train_after``: the one-model test's crop classifier (``train.crop_classifier``),
    on the public set's crops, as the pair trains (``recipes.crop_fit``), after the pair; reused
    and resumed like a model of the pair."""
    import dataclasses
    import time

    from study.stages.train import finish_job, fit_context, reused, start_attempt
    from study.train.driver import TrainJob, fit

    cfg = ctx.cfg
    if not cfg.train.crop_classifier:
        return
    out_dir = ctx.model_dir(CROP_CLASSIFIER)
    if reused(ctx, CROP_CLASSIFIER, digest, summary):
        return
    start_attempt(ctx, CROP_CLASSIFIER, digest)  # an interrupted attempt resumes from its last checkpoint
    ctx.log("train", f"{CROP_CLASSIFIER}: supervised on the public set's crops ({cfg.embed.crop.rule} rule), "
                     f"{cfg.train.epochs} epochs")
    context = {**fit_context(ctx, "crop", manifest), "crop": cfg.embed.crop}
    job = TrainJob(CROP_CLASSIFIER, ("public",), out_dir, manifest["counts"].get("public", 0))
    start = time.perf_counter()
    fit(job, dataclasses.replace(cfg.train, method="supervised", params={}), cfg.model, context, cfg.ray.use_gpu)
    finish_job(job, digest, summary, {}, time.perf_counter() - start)
