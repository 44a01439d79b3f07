"""Ray Train edge: fit each model of the study with a ``TorchTrainer``.

``train_func`` runs on every worker: its recipe (``study.train.recipes``) loads this worker's share
of the training records (or takes this worker's shard of a Ray Data stream, for large sets; see
``study.train.stream``) and builds the model; the driver restores the last checkpoint if Ray Train
hands one back (a rerun with the same ``RunConfig(name, storage_path)`` resumes) and runs the
recipe's plain-PyTorch epochs. Rank 0 keeps the per-epoch
metrics in ``metrics.jsonl`` and writes the final ``model.pt`` beside it.

Concurrent fits (``fit_all``) run one trainer per thread; the first failure, or a Ctrl-C, aborts
the other trainers (``AbortableTrainer.abort``, Ray's own graceful abort) before the error is raised.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

from study import storage
from study.config import ModelConfig, TrainConfig
from study.faults import fault
from study.train import layout
from study.train.abortable import AbortableTrainer
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

    # Restore: weights, optimiser, schedule and metrics history of the last finished epoch. Ray
    # Train hands the last checkpoint back both to a rerun and to a worker group it restarted.
    start_epoch, history, attempt = 0, [], 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        fit.optimizer.load_state_dict(state["optimizer"])
        fit.scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        attempt = state.get("attempt", 0) + 1  # restores so far; marks the epochs trained after this one
        if rank == 0:
            _progress(f"[train {config['name']}] resuming after epoch {start_epoch}/{cfg.epochs}")

    if start_epoch >= cfg.epochs and rank == 0:  # finished before; only the export was lost
        _export(config, fit, model, history, final=True)
    for epoch in range(start_epoch, cfg.epochs):
        # Per-epoch seeding makes a resumed run draw the same views as an uninterrupted one.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)
        if rank == 0 and not checkpoint and config.get("kill_at_epoch") == epoch + 1:
            fit.optimizer.register_step_post_hook(_kill_worker(config["name"], epoch + 1))
        metrics = fit.run_epoch(model, epoch, gen)
        history.append({"epoch": epoch + 1, "attempt": attempt, **metrics})
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
                "attempt": attempt,
            }
            torch.save(state, os.path.join(d, "state.pt"))
            if rank == 0:
                _export(config, fit, model, history, final=done)
                _progress(
                    f"[train {config['name']}] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                    f"({metrics['seconds']:.2f} s/epoch)"
                )
            ray.train.report({"epoch": epoch + 1, "loss": metrics["loss"]}, checkpoint=Checkpoint.from_directory(d))


def _kill_worker(name: str, epoch: int):
    """Fault ``kill_train_worker`` (``study.faults``): an optimiser hook that ends this worker's
    process abruptly after the first step of ``epoch``, midway through it."""
    from ray.train.v2._internal.execution.context import get_train_context

    def hook(optimizer, args, kwargs) -> None:
        # Ray Train commits a reported checkpoint when its controller next polls the worker (every
        # 2 s); a death before that resumes from the one before. Model a death after the commit.
        results, deadline = get_train_context().get_result_queue(), time.monotonic() + 60
        while not results.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        _progress(f"[train {name}] fault injected: worker exits midway through epoch {epoch}")
        os._exit(1)

    return hook


def _export(config: dict, fit: Fit, model: torch.nn.Module, history: list, final: bool) -> None:
    """Rank 0, at a checkpoint: metrics so far to ``metrics.jsonl`` and the model as it is now to
    ``snapshots/`` (what a ``train.snapshot`` setting measures); at the end also to ``model.pt``."""
    out_dir = config["out_dir"]
    lines = "".join(json.dumps(h) + "\n" for h in history)
    storage.write_bytes(storage.join(out_dir, layout.METRICS), lines.encode())
    blob = fit.export(_unwrap(model), history)
    if not final:
        storage.write_bytes(storage.join(out_dir, layout.SNAPSHOTS, layout.snapshot_name(history[-1]["epoch"])), blob)
    else:
        storage.write_bytes(storage.join(out_dir, layout.MODEL), blob)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def fit(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit one model; rerunning with the same ``job.out_dir`` resumes from its last checkpoint."""
    _trainer(job, cfg, model_cfg, context, use_gpu).fit()


def _trainer(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> AbortableTrainer:
    datasets = {}
    if job.stream:
        from study.train.stream import training_dataset

        datasets["train"] = training_dataset(context["data_root"], context["split_plan"], job.splits,
                                             context["inputs"], text=context["recipe"] == "clip")
    kill_at = fault("kill_train_worker")  # read here: a remote cluster's workers lack the driver's env
    return AbortableTrainer(
        train_func,
        train_loop_config={
            "name": job.name,
            "train": cfg,
            "model": model_cfg,
            "splits": list(job.splits),
            "out_dir": job.out_dir,
            "stream": job.stream,
            "train_records": job.records,
            "kill_at_epoch": int(kill_at) if kill_at else None,
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


def fit_all(jobs: list[TrainJob], cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit the jobs, concurrently when ``cfg.concurrent`` (each trainer holds its own workers).

    Concurrently, the first failure aborts the other trainers and a KeyboardInterrupt aborts them
    all (each resumes from its last checkpoint on a rerun); the error raised names every model
    that failed, chaining the first failure.
    """
    if not cfg.concurrent or len(jobs) == 1:
        for job in jobs:
            fit(job, cfg, model_cfg, context, use_gpu)
        return
    trainers = {job.name: _trainer(job, cfg, model_cfg, context, use_gpu) for job in jobs}
    failed: dict[str, BaseException] = {}

    def run(name: str, trainer: AbortableTrainer) -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # reported below, in the caller's thread
            if not trainer.aborted:  # an aborted run's error is the abort itself
                failed[name] = exc
                for other in trainers.values():
                    if other is not trainer:
                        other.abort()

    threads = [threading.Thread(target=run, args=item, name=f"fit-{item[0]}", daemon=True) for item in trainers.items()]
    for t in threads:
        t.start()
    try:
        with _ctrl_c_raises():
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)  # not join(): a KeyboardInterrupt must reach this thread
    except KeyboardInterrupt:
        for trainer in trainers.values():
            trainer.abort()
        for t in threads:
            t.join(timeout=60)
        raise
    if failed:
        lines = "; ".join(f"{name}: {_summary(exc)}" for name, exc in failed.items())
        raise RuntimeError(f"training failed for {', '.join(failed)} ({lines})") from next(iter(failed.values()))


@contextlib.contextmanager
def _ctrl_c_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) while waiting, whatever a library installed
    before (Ray's handlers abort their own runs and may swallow the signal); the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _summary(exc: BaseException) -> str:
    """One line for an error; Ray Train's WorkerGroupError by its workers' own errors."""
    failures = getattr(exc, "worker_failures", None) or {}
    parts = [f"rank {rank}: {_one_line(e)}" for rank, e in sorted(failures.items())]
    return "; ".join(parts) or _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
