"""Ray Train edge: fit each model of the study with a ``TorchTrainer``.

``train_func`` runs on every worker: its recipe (``study.train.recipes``) loads this worker's share
of the training records (or takes this worker's shard of a Ray Data stream, for large sets; see
``study.train.stream``) and builds the model; the driver restores the last checkpoint if Ray Train
hands one back (a rerun with the same ``RunConfig(name, storage_path)`` resumes) and runs the
recipe's plain-PyTorch epochs. Rank 0 keeps the per-epoch
metrics in ``metrics.jsonl`` and writes the final ``model.pt`` beside it.

Concurrent fits (``fit_all``) run each model's ``TorchTrainer.fit`` in a Ray task of its own; the
first failure, or a Ctrl-C, cancels the other tasks (``ray.cancel``: Ray Train's own Ctrl-C
handling aborts the run; a task that does not end is then ended with its process, and with it,
by Ray's ownership rules, the controller it started) before the error is raised. Every model resumes from its last checkpoint
on a rerun. Only Ray's public APIs are used.
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
from ray.train.torch import TorchTrainer

from study import storage
from study.config import ModelConfig, TrainConfig
from study.faults import fault
from study.train import layout
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
    """Ray Train narrates every checkpoint at INFO, partly from loggers ``LoggingConfig`` does not
    reach (one is named after its source file); in this worker, every logger of Ray Train's
    (``ray.train.*``, or named after a file of its package) keeps to warnings."""
    package = os.path.dirname(ray.train.__file__)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train.") or name.startswith(package):
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
    fit = RECIPES[config["recipe"]].fit(config, rank, world, stream)
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
        pause = config.get("pause_at_epoch")
        if not checkpoint and pause and pause[0] == epoch + 1:  # fault pause_train_epoch (study.faults)
            _progress(f"[train {config['name']}] fault injected: pausing {pause[1]:g} s before epoch {epoch + 1}")
            time.sleep(pause[1])
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

    def hook(optimizer, args, kwargs) -> None:
        # Ray Train commits a reported checkpoint when its controller next polls the worker (every
        # train.poll_s); a death before that resumes from the one before. Model a death after the
        # commit: several polls later.
        time.sleep(COMMIT_WAIT_S)
        _progress(f"[train {name}] fault injected: worker exits midway through epoch {epoch}")
        os._exit(1)

    return hook


COMMIT_WAIT_S = 3.0


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
    """Fit one model in this process (Ray Train's own Ctrl-C handling aborts it); rerunning with
    the same ``job.out_dir`` resumes from its last checkpoint."""
    _fit(_trainer_args(job, cfg, model_cfg, context, use_gpu))


def _fit(args: dict) -> None:
    # In the main thread Ray Train installs a Ctrl-C handler that holds its controller's handle;
    # left installed, it would keep the finished controller alive. The caller's comes back.
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        with _environment(_fit_env(args["train_loop_config"])):
            TorchTrainer(**args).fit()
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


def _fit_env(loop_config: dict) -> dict[str, str]:
    """Ray Train's settings for one fit that it reads from the environment of the process calling
    ``fit`` (and hands on to the controller and its workers): the controller polls its workers
    every ``train.poll_s``; on the study's own instance (one machine, whose node nobody drains)
    no preemption watcher, an actor and so a process of its own for every fit, is started."""
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": f"{loop_config['train'].poll_s:g}"}
    if loop_config.get("one_machine"):
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return env


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    """``env`` set in this process for the block, then put back as it was."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _trainer_args(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> dict:
    """The ``TorchTrainer`` arguments for one model (built in the driver, so a fit in a Ray task
    gets exactly these)."""
    datasets = {}
    if job.stream:
        from study.train.stream import training_dataset

        datasets["train"] = training_dataset(context["data_root"], context["split_plan"], job.splits,
                                             context["inputs"], text=RECIPES[context["recipe"]].reads_text)
    kill_at = fault("kill_train_worker")  # read here: a remote cluster's workers lack the driver's env
    pause_at = fault("pause_train_epoch")
    return dict(
        train_loop_per_worker=train_func,
        train_loop_config={
            "name": job.name,
            "train": cfg,
            "model": model_cfg,
            "splits": list(job.splits),
            "out_dir": job.out_dir,
            "stream": job.stream,
            "train_records": job.records,
            "kill_at_epoch": int(kill_at) if kill_at else None,
            "pause_at_epoch": tuple(float(v) for v in pause_at.split(":")) if pause_at else None,
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


@ray.remote(num_cpus=0, max_retries=0)
def _fit_task(args: dict) -> None:
    """One model's fit, in a task the driver can cancel (``_cancel``)."""
    _fit(args)


def fit_all(jobs: list[TrainJob], cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit the jobs, concurrently when ``cfg.concurrent`` (each trainer holds its own workers).

    Concurrently, the first failure cancels the other fits and a KeyboardInterrupt cancels them
    all (each resumes from its last checkpoint on a rerun); the error raised names every model
    that failed, chaining the first failure.
    """
    if not cfg.concurrent or len(jobs) == 1:
        for job in jobs:
            fit(job, cfg, model_cfg, context, use_gpu)
        return
    running = {_fit_task.remote(_trainer_args(job, cfg, model_cfg, context, use_gpu)): job.name for job in jobs}
    failed: dict[str, BaseException] = {}
    try:
        with _ctrl_c_raises():
            pending = list(running)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)  # a KeyboardInterrupt gets through
                for ref in done:
                    try:
                        ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        pass  # cancelled below, after another's failure
                    except Exception as exc:
                        failed[running[ref]] = exc
                        _cancel(pending)
    except KeyboardInterrupt:
        _cancel(list(running))
        raise
    if failed:
        lines = "; ".join(f"{name}: {_summary(exc)}" for name, exc in failed.items())
        first = next(iter(failed.values()))
        raise RuntimeError(f"training failed for {', '.join(failed)} ({lines})") from getattr(first, "cause", None) or first


def _cancel(refs: list, graceful_s: float = 60.0) -> None:
    """End the fits still running and wait until they have. ``ray.cancel`` interrupts a task as
    Ctrl-C would, so Ray Train's own handler aborts its run (its controller stops the workers
    and releases their placement group); a fit still running after ``graceful_s`` has its process
    ended, and with it, by Ray's ownership rules, the controller and its workers."""
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=graceful_s)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        ray.wait(left, num_returns=len(left), timeout=60)


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
    """One line for an error; Ray Train's WorkerGroupError by its workers' own errors (also when
    the error arrives wrapped by the Ray task that ran the fit)."""
    exc = getattr(exc, "cause", None) or exc
    failures = getattr(exc, "worker_failures", None) or {}
    parts = [f"rank {rank}: {_one_line(e)}" for rank, e in sorted(failures.items())]
    return "; ".join(parts) or _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
