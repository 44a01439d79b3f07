"""Stage ``train``: model A on the target split, model B on the reference split (DESIGN §2).

Both use the same recipe and seed policy (the kind's recipe: SSL encoders or CLIP-style
image–text models); with a ``shared`` split, both also train on it. A model whose own marker
matches is reused, so an interrupted stage retrains only what is missing, and a model interrupted
mid-training resumes from its last Ray Train checkpoint.
"""
from __future__ import annotations

import json
import time

from study import storage
from study.errors import DataError
from study.pipeline.context import RunContext, is_complete, write_marker
from study.pipeline.kinds import get_kind
from study.pipeline.manifest import verify_splits
from study.train.driver import TrainJob, fit_all


def training_splits(models: dict[str, str], counts: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Splits each model trains on: its own, plus the shared split when that has records."""
    shared = ("shared",) if counts.get("shared", 0) > 0 else ()
    return {model: (split, *shared) for model, split in models.items()}


def count_skipped(recipe: str, ctx: RunContext, splits: tuple[str, ...], counts: dict[str, int]) -> dict[str, int]:
    """Training records the recipe leaves out, by reason; logged, and an error if none are left."""
    from study.train.recipes import TRAINING_SKIPS

    skips = TRAINING_SKIPS.get(recipe)
    out = skips(ctx.data_root, ctx.splits_dir, splits) if skips else {}
    if out:
        total = sum(counts.get(s, 0) for s in splits)
        ctx.log("train", f"{'+'.join(splits)}: skipping " + ", ".join(f"{n} {r}" for r, n in out.items()))
        if sum(out.values()) >= total:
            raise DataError(f"no usable training records in {'+'.join(splits)} ({out})")
    return out


def run_train(ctx: RunContext, digest: str) -> dict:
    cfg = ctx.cfg
    kind = get_kind(cfg.study)
    manifest = verify_splits(ctx.splits_dir)
    splits_of = training_splits(dict(kind.models), manifest["counts"])
    jobs, summary, skipped = [], {}, {}
    for model in kind.models:
        out_dir = ctx.model_dir(model)
        done = is_complete(out_dir, digest)
        if done:
            ctx.log("train", f"{model}: reusing finished model ({done['seconds']:.0f} s when trained)")
            summary[model] = done["summary"]
            continue
        # Checkpoints from a different recipe must not be resumed: start that model afresh.
        started = storage.join(out_dir, "_STARTED.json")
        if storage.exists(started) and storage.read_json(started).get("hash") != digest:
            ctx.log("train", f"{model}: config changed since its last attempt; discarding its checkpoints")
            storage.remove(out_dir)
        storage.write_json(started, {"hash": digest})
        skipped[model] = count_skipped(kind.recipe, ctx, splits_of[model], manifest["counts"])
        jobs.append(TrainJob(model, splits_of[model], out_dir))
    if jobs:
        names = ", ".join(f"{j.name} on {'+'.join(j.splits)}" for j in jobs)
        mode = "concurrently" if cfg.train.concurrent and len(jobs) > 1 else "one after the other"
        ctx.log("train", f"fitting {names} {mode}: {cfg.train.method}, {cfg.train.epochs} epochs")
        start = time.perf_counter()
        context = {
            "recipe": kind.recipe,
            "data_root": ctx.data_root,
            "splits_dir": ctx.splits_dir,
            "num_classes": manifest["num_classes"],
            "image_size": cfg.data.image_size,
        }
        fit_all(jobs, cfg.train, cfg.model, context, cfg.ray.use_gpu)
        seconds = time.perf_counter() - start
        for job in jobs:
            history = storage.read_bytes(storage.join(job.out_dir, "metrics.jsonl")).decode().splitlines()
            summary[job.name] = {"splits": list(job.splits), "epochs": len(history), "final": json.loads(history[-1]),
                                 "skipped": skipped[job.name]}
            write_marker(job.out_dir, digest, summary[job.name], seconds)
    return summary
