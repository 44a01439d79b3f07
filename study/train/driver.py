"""Ray Train edge: fit each model of the study with a ``TorchTrainer``.

``train_func`` runs on every worker: its recipe (``study.train.recipes``) loads this worker's share
of the training records (or takes this worker's shard of a Ray Data stream, for large sets; see
``study.train.stream``) and builds the model; the driver restores the last checkpoint if Ray Train
hands one back (a rerun with the same ``RunConfig(name, storage_path)`` resumes) and runs the
recipe's plain-PyTorch epochs. Rank 0 keeps the per-epoch
metrics in ``metrics.jsonl`` and writes the final ``model.pt`` beside it.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass

import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from study import storage
from study.config import ModelConfig, TrainConfig
from study.train.recipes import RECIPES, Fit


@dataclass(frozen=True)
class TrainJob:
    """One model to fit: its name, the splits it trains on and where its outputs go."""

    name: str
    splits: tuple[str, ...]
    out_dir: str
    records: int = 0  # usable training records (streamed sets: the scheduler's length)
    stream: bool = False  # through Ray Data (large sets) rather than loaded by every worker


def _progress(message: str) -> None:
    # Ray Train tees print() into its logger as well, so each line would show twice.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _quiet_checkpoint_logs() -> None:
    """Ray Train narrates every checkpoint at INFO from loggers that LoggingConfig misses."""
    from ray.train.v2._internal.execution import context, storage as train_storage

    for name in (context.__file__, train_storage.__name__):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_func(config: dict) -> None:
    cfg: TrainConfig = config["train"]
    _quiet_checkpoint_logs()
    torch.set_num_threads(cfg.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # same initial weights on every worker and for every rerun
    stream = None
    if config.get("stream"):  # a large set: this worker's equal share of the Ray Data stream
        from study.train.stream import shard_batches

        stream = shard_batches(ray.train.get_dataset_shard("train"), cfg.seed, rank)
    fit = RECIPES[config["recipe"]](config, rank, world, stream)
    model = ray.train.torch.prepare_model(fit.model)  # to this worker's device; DDP when world > 1

    # Restore: weights, optimiser, schedule and metrics history of the last finished epoch.
    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        fit.optimizer.load_state_dict(state["optimizer"])
        fit.scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        if rank == 0:
            _progress(f"[train {config['name']}] resuming after epoch {start_epoch}/{cfg.epochs}")

    if start_epoch >= cfg.epochs and rank == 0:  # finished before; only the export was lost
        _export(config, fit, model, history, final=True)
    for epoch in range(start_epoch, cfg.epochs):
        # Per-epoch seeding makes a resumed run draw the same views as an uninterrupted one.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)
        metrics = fit.run_epoch(model, epoch, gen)
        history.append({"epoch": epoch + 1, **metrics})
        done = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.checkpoint_every and not done:
            continue
        # Checkpoint phase: state for resuming, metrics so far, and at the end the model itself.
        with tempfile.TemporaryDirectory() as d:
            state = {
                "model": _unwrap(model).state_dict(),
                "optimizer": fit.optimizer.state_dict(),
                "scheduler": fit.scheduler.state_dict(),
                "epoch": epoch + 1,
                "history": history,
            }
            torch.save(state, os.path.join(d, "state.pt"))
            if rank == 0:
                _export(config, fit, model, history, final=done)
                _progress(
                    f"[train {config['name']}] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                    f"({metrics['seconds']:.2f} s/epoch)"
                )
            ray.train.report({"epoch": epoch + 1, "loss": metrics["loss"]}, checkpoint=Checkpoint.from_directory(d))


def _export(config: dict, fit: Fit, model: torch.nn.Module, history: list, final: bool) -> None:
    """Rank 0: metrics so far to ``metrics.jsonl``; at the end also the model to ``model.pt``."""
    out_dir = config["out_dir"]
    lines = "".join(json.dumps(h) + "\n" for h in history)
    storage.write_bytes(storage.join(out_dir, "metrics.jsonl"), lines.encode())
    if final:
        storage.write_bytes(storage.join(out_dir, "model.pt"), fit.export(_unwrap(model), history))


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def fit(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit one model; rerunning with the same ``job.out_dir`` resumes from its last checkpoint."""
    datasets = {}
    if job.stream:
        from study.train.stream import training_dataset

        datasets["train"] = training_dataset(context["data_root"], context["split_plan"], job.splits,
                                             context["image_size"], text=context["recipe"] == "clip")
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "name": job.name,
            "train": cfg,
            "model": model_cfg,
            "splits": list(job.splits),
            "out_dir": job.out_dir,
            "stream": job.stream,
            "train_records": job.records,
            **context,
        },
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=storage.join(job.out_dir, "ray_train"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # the study prints its own progress
        ),
    )
    trainer.fit()


def fit_all(jobs: list[TrainJob], cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit the jobs, concurrently when ``cfg.concurrent`` (each trainer holds its own workers)."""
    if not cfg.concurrent or len(jobs) == 1:
        for job in jobs:
            fit(job, cfg, model_cfg, context, use_gpu)
        return
    errors: list[BaseException] = []

    def run(job: TrainJob) -> None:
        try:
            fit(job, cfg, model_cfg, context, use_gpu)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,), name=f"fit-{job.name}") for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
