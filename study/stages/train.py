"""Stage ``train``: model A on the target split, model B on the reference split.

Both use the same recipe and seed policy (the kind's recipe: SSL encoders or CLIP-style
image–text models); with a ``shared`` split, both also train on it. A model whose own marker
matches is reused, so an interrupted stage retrains only what is missing, and a model interrupted
mid-training resumes from its last checkpoint. The one-model tests' models train on the
public split alone, reused and resumed alike: the SSL crop classifier (``train.crop_classifier``,
after the pair) and the VLM text retriever (``train.text_retriever``, the pair's recipe; beside the
pair when the cluster holds all three trainers' workers at once, else after it).
"""
from __future__ import annotations

import dataclasses
import json
import time

from study import storage
from study.config import TrainConfig
from study.errors import ConfigError, DataError
from study.frame.cluster import check_resources, own_instance, worker_bundle
from study.frame.context import RunContext, is_complete, write_marker
from study.frame.kinds import StudyKind, get_kind
from study.stages.splits import verify_splits
from study.train.driver import TrainJob, fit_all
from study.train.stream import use_stream
from study.data.model_input import ModelInput


def training_splits(models: dict[str, str], counts: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Splits each model trains on: its own, plus the shared split when that has records."""
    shared = ("shared",) if counts.get("shared", 0) > 0 else ()
    return {model: (split, *shared) for model, split in models.items()}


def check_labels(kind: StudyKind, manifest: dict, data_root: str) -> None:
    """A kind that reads labels needs at least two classes among the records: without labels the
    split plan counts none, and the models would train a zero-way classifier and every k-NN
    prediction would be empty."""
    n = manifest["num_classes"]
    if "label" not in kind.record_columns or n >= 2:
        return
    what = "carry no labels" if n == 0 else "carry a single label"
    raise DataError(f"the records under {data_root} {what} (num_classes = {n}); "
                    f"the {kind.name} study needs a label per record, of at least two classes")


def count_skipped(recipe: str, ctx: RunContext, splits: tuple[str, ...], counts: dict[str, int],
                  stream: bool) -> dict[str, int]:
    """Training records the recipe leaves out, by reason; logged, and an error if none are left.
    A streamed set is counted by Ray Data tasks, a small one in the driver."""
    from study.train.recipes import RECIPES
    from study.train.stream import count_rows

    total = sum(counts.get(s, 0) for s in splits)
    out = {}
    how = RECIPES[recipe]
    if stream and how.reads_text:  # a streamed set with captions leaves out the records without one
        inside, usable = count_rows(ctx.data_root, ctx.split_plan(), splits, text=True)
        out = {"empty_caption": inside - usable} if inside > usable else {}
    elif how.skipped is not None:
        out = how.skipped(ctx.data_root, ctx.splits_dir, splits)
    if out:
        ctx.log("train", f"{'+'.join(splits)}: skipping " + ", ".join(f"{n} {r}" for r, n in out.items()))
        if sum(out.values()) >= total:
            raise DataError(f"no usable training records in {'+'.join(splits)} ({out})")
    return out


def _room_for_streams(ctx: RunContext, jobs: list[TrainJob]) -> bool:
    """Whether streamed jobs can train concurrently: Ray Data's decode tasks need CPUs beside the
    training workers, or the stream stalls without an error. Raises when even one job leaves none."""
    import ray

    from study.train.stream import TASK_CPUS

    cfg = ctx.cfg.train
    total = float(ray.cluster_resources().get("CPU", 0))
    beside_tasks = {"CPU": total - TASK_CPUS}  # the CPUs the trainers may take
    if not room_for(beside_tasks, cfg, False, 1):
        raise ConfigError(f"train.cpus_per_worker: {cfg.num_workers} worker(s) x {cfg.cpus_per_worker} CPU leave no "
                          f"CPU of {total:g} for the streamed training set's decode tasks; lower it")
    return room_for(beside_tasks, cfg, False, len(jobs))


def run_train(ctx: RunContext, digest: str) -> dict:
    from study.train.imports import checkpoint_of

    cfg = ctx.cfg
    kind = get_kind(cfg.study)
    manifest = verify_splits(ctx.splits_dir)
    check_labels(kind, manifest, ctx.data_root)
    splits_of = training_splits(dict(kind.models_for(cfg)), manifest["counts"])
    jobs, summary, skipped = [], {}, {}
    for model in kind.models_for(cfg):
        out_dir = ctx.model_dir(model)
        if reused(ctx, model, digest, summary):
            continue
        if checkpoint_of(cfg, model):
            summary[model] = _import_checkpoint(ctx, digest, manifest, out_dir, model)
            continue
        job, skipped[model] = new_job(ctx, kind.recipe, model, splits_of[model], manifest, digest)
        jobs.append(job)
    # A model of the kind's besides the pair (the VLM text retriever): beside it if there is room.
    beside = kind.train_beside(ctx, manifest, digest, summary) if kind.train_beside else None
    if beside and (not jobs or (cfg.train.concurrent and room_for(_resources(), cfg.train, cfg.ray.use_gpu,
                                                                  len(jobs) + 1))):
        job, skipped[beside[0].name] = beside
        jobs.append(job)
        beside = None
    if jobs:
        names = ", ".join(f"{j.name} on {'+'.join(j.splits)}" for j in jobs)
        train_cfg = cfg.train
        if any(j.stream for j in jobs) and train_cfg.concurrent and not _room_for_streams(ctx, jobs):
            ctx.log("train", "too few CPUs for concurrent streamed training beside its decode tasks; one model at a time")
            train_cfg = dataclasses.replace(train_cfg, concurrent=False)
        check_resources(worker_bundle(cfg), "training", own_instance(cfg.ray), cfg.ray.resource_wait_s,
                        lambda m: ctx.log("train", m))
        mode = "concurrently" if train_cfg.concurrent and len(jobs) > 1 else "one after the other"
        ctx.log("train", f"fitting {names} {mode}: {cfg.train.method}, {cfg.train.epochs} epochs")
        start = time.perf_counter()
        fit_all(jobs, train_cfg, cfg.model, fit_context(ctx, kind.recipe, manifest), cfg.ray.use_gpu)
        seconds = time.perf_counter() - start
        for job in jobs:
            finish_job(job, digest, summary, skipped[job.name], seconds, [j.name for j in jobs if len(jobs) > 1
                                                                         and train_cfg.concurrent])
    if kind.train_after:  # what the kind trains after the pair (the SSL crop classifier)
        kind.train_after(ctx, manifest, digest, summary)
    if beside:  # no room beside the pair: after it
        (job, left_out), start = beside, time.perf_counter()
        fit_all([job], cfg.train, cfg.model, fit_context(ctx, kind.recipe, manifest), cfg.ray.use_gpu)
        finish_job(job, digest, summary, left_out, time.perf_counter() - start, [])
    return summary


def _resources() -> dict:
    import ray

    return ray.cluster_resources()


def room_for(resources: dict, cfg: TrainConfig, use_gpu: bool, trainers: int) -> bool:
    """Whether the cluster holds ``trainers`` trainers' workers at once. A trainer that must wait
    for CPUs would time out its start in Ray Train, so one that does not fit trains afterwards."""
    need = trainers * cfg.num_workers
    return resources.get("CPU", 0) >= need * cfg.cpus_per_worker and (not use_gpu or resources.get("GPU", 0) >= need)


def new_job(ctx: RunContext, recipe: str, model: str, splits: tuple[str, ...], manifest: dict,
             digest: str) -> tuple[TrainJob, dict]:
    """Start a model's attempt: (its job, the training records the recipe leaves out), logged."""
    cfg = ctx.cfg
    start_attempt(ctx, model, digest)
    n = sum(manifest["counts"].get(s, 0) for s in splits)
    stream = use_stream(cfg.train, n, cfg.data.image_size)
    how = "streamed through Ray Data" if stream else "loaded into each worker's memory"
    ctx.log("train", f"{model}: {n} records in {'+'.join(splits)}, {how} (train.stream={cfg.train.stream})")
    skipped = count_skipped(recipe, ctx, splits, manifest["counts"], stream)
    return TrainJob(model, splits, ctx.model_dir(model), n - sum(skipped.values()), stream), skipped


def fit_context(ctx: RunContext, recipe: str, manifest: dict) -> dict:
    """What a recipe's workers read besides the train config: where the records and splits are."""
    return {
        "recipe": recipe,
        "data_root": ctx.data_root,
        "splits_dir": ctx.splits_dir,
        "num_classes": manifest["num_classes"],
        "inputs": ModelInput.of(ctx.cfg.data),
        "split_plan": ctx.split_plan(),
        "one_machine": own_instance(ctx.cfg.ray),
    }


def reused(ctx: RunContext, model: str, digest: str, summary: dict) -> bool:
    """Whether the model's own marker matches: then its summary is taken and it is not trained."""
    done = is_complete(ctx.model_dir(model), digest)
    if done:
        ctx.log("train", f"{model}: reusing finished model ({done['seconds']:.0f} s when trained)")
        summary[model] = done["summary"]
    return bool(done)


def start_attempt(ctx: RunContext, model: str, digest: str) -> None:
    """Mark the model's attempt; checkpoints from a different recipe must not be resumed, so a
    model whose config changed since its last attempt starts afresh."""
    out_dir = ctx.model_dir(model)
    started = storage.join(out_dir, "_STARTED.json")
    if storage.exists(started) and storage.read_json(started).get("hash") != digest:
        ctx.log("train", f"{model}: config changed since its last attempt; discarding its checkpoints")
        storage.remove(out_dir)
    storage.write_json(started, {"hash": digest})


def _import_checkpoint(ctx: RunContext, digest: str, manifest: dict, out_dir: str, model: str) -> dict:
    """A model from ``train.checkpoint`` / ``train.checkpoint_b`` (trained elsewhere) instead of
    training it."""
    from study.train.checkpoints import check_spaces
    from study.train.imports import KEYS, import_model

    cfg, kind = ctx.cfg, get_kind(ctx.cfg.study)
    start = time.perf_counter()
    data, info = import_model(cfg, kind.recipe, model, manifest["num_classes"])
    if "projector" in info:
        check_spaces(info, tuple(cfg.search.representations))
    storage.remove(out_dir)
    storage.write_bytes(storage.join(out_dir, "model.pt"), data)
    what = f"projector weights: {'yes' if info['projector'] else 'no'}" if "projector" in info else \
        f"{info['clip']}, saved as {info.get('saved_as', 'float32')}"
    ctx.log("train", f"{model}: imported {info['checkpoint']} ({info['format']}; {what}) from {KEYS[model]}")
    write_marker(out_dir, digest, info, time.perf_counter() - start)
    return info


def finish_job(job: TrainJob, digest: str, summary: dict, skipped: dict, seconds: float,
            together: list[str] | None = None) -> None:
    history = storage.read_bytes(storage.join(job.out_dir, "metrics.jsonl")).decode().splitlines()
    summary[job.name] = {"splits": list(job.splits), "epochs": len(history), "final": json.loads(history[-1]),
                         "skipped": skipped, "trained_with": [n for n in together or [] if n != job.name],
                         "streamed": job.stream}
    write_marker(job.out_dir, digest, summary[job.name], seconds)
