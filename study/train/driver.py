"""Ray edge of training: fit each model of the study with a ``TorchTrainer``, or, for a fit of one
worker from memory (``train.runner: auto``), in a Ray task that is its worker.

Either way each worker runs ``fit_loop.run_loop``: its recipe (``study.train.recipes``) loads this
worker's share of the training records (or takes this worker's shard of a Ray Data stream, for
large sets; see ``study.train.stream``) and builds the model, the last checkpoint is restored if
there is one (Ray Train hands it back to a rerun with the same ``RunConfig(name, storage_path)``;
a fit's task reads its own file, ``sessions``) and the recipe's plain-PyTorch epochs run. Rank 0
keeps the per-epoch metrics in ``metrics.jsonl`` and writes the final ``model.pt`` beside it.

Concurrent fits (``fit_all``) run each model's fit in a Ray task of its own (``TorchTrainer.fit``,
or the loop itself); the first failure, or a Ctrl-C, cancels the other tasks (``ray.cancel``: Ray
Train's own Ctrl-C handling aborts the run; a task that does not end is then ended with its
process, and with it, by Ray's ownership rules, the controller it started) before the error is
raised. Every model resumes from its last checkpoint on a rerun. Only Ray's public APIs are used.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from study import storage
from study.config import ModelConfig, TrainConfig
from study.faults import fault
from study.train.fit_loop import run_loop
from study.train.recipes import RECIPES
from study.train.sessions import RayTrainSession, TaskSession


@dataclass(frozen=True)
class TrainJob:
    """One model to fit: its name, the splits it trains on and where its outputs go."""

    name: str
    splits: tuple[str, ...]
    out_dir: str
    records: int = 0  # usable training records (streamed sets: the scheduler's length)
    stream: bool = False  # through Ray Data (large sets) rather than loaded by every worker


def train_func(config: dict) -> None:
    """Ray Train's worker entry."""
    run_loop(config, RayTrainSession())


def in_task(cfg: TrainConfig, job: TrainJob, context: dict) -> bool:
    """Whether the job's loop runs in its Ray task rather than on Ray Train (``train.runner``): a
    fit of one worker from memory on the study's own instance. On a cluster every fit stays on Ray
    Train, whose worker group fails its start after a bounded wait where a task would wait for a
    lost node's CPUs as long as the autoscaler takes to bring them back."""
    return cfg.runner == "auto" and cfg.num_workers == 1 and not job.stream and bool(context.get("one_machine"))


def fit(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit one model (Ray Train's own Ctrl-C handling aborts a fit on Ray Train; a fit in a task
    is cancelled); rerunning with the same ``job.out_dir`` resumes from its last checkpoint."""
    if in_task(cfg, job, context):
        ref = _submit(job, cfg, model_cfg, context, use_gpu)
        _wait([ref], {ref: job.name})
    else:
        _fit(_trainer_args(job, cfg, model_cfg, context, use_gpu))


def _fit(args: dict) -> None:
    if "task" in args:  # this process is the fit's one worker
        run_loop(args["train_loop_config"], TaskSession(args["train_loop_config"]["out_dir"], args["task"]["use_gpu"]))
        return
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


def _task_args(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> dict:
    """What a fit in a task needs: the loop's config (as Ray Train's workers get it)."""
    args = _trainer_args(job, cfg, model_cfg, context, use_gpu)
    return {"train_loop_config": args["train_loop_config"], "task": {"use_gpu": use_gpu}}


@ray.remote(num_cpus=0, max_retries=0)
def _fit_task(args: dict) -> None:
    """One model's fit, in a task the driver can cancel (``_cancel``): Ray Train's, whose workers
    hold the resources, or the fit's own loop (``in_task``)."""
    _fit(args)


# A fit in a task is retried as often as Ray Train restarts a failed worker group (FailureConfig).
TASK_RETRIES = 2


def _submit(job: TrainJob, cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool):
    if not in_task(cfg, job, context):
        return _fit_task.remote(_trainer_args(job, cfg, model_cfg, context, use_gpu))
    # The task is the worker: it holds the worker's resources, and a lost process reruns
    # it, resuming from its last checkpoint (an error of its own is not retried).
    return _fit_task.options(num_cpus=cfg.cpus_per_worker, num_gpus=1 if use_gpu else 0, max_retries=TASK_RETRIES,
                             retry_exceptions=False).remote(_task_args(job, cfg, model_cfg, context, use_gpu))


def fit_all(jobs: list[TrainJob], cfg: TrainConfig, model_cfg: ModelConfig, context: dict, use_gpu: bool) -> None:
    """Fit the jobs, concurrently when ``cfg.concurrent`` (each fit holds its own workers).

    Concurrently, the first failure cancels the other fits and a KeyboardInterrupt cancels them
    all (each resumes from its last checkpoint on a rerun); the error raised names every model
    that failed, chaining the first failure.
    """
    if not cfg.concurrent or len(jobs) == 1:
        for job in jobs:
            fit(job, cfg, model_cfg, context, use_gpu)
        return
    running = {_submit(job, cfg, model_cfg, context, use_gpu): job.name for job in jobs}
    _wait(list(running), running)


def _wait(refs: list, names: dict) -> None:
    """Wait for the fits ``refs`` (model names by reference in ``names``); see ``fit_all``."""
    failed: dict[str, BaseException] = {}
    try:
        with _ctrl_c_raises():
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)  # a KeyboardInterrupt gets through
                for ref in done:
                    try:
                        ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        pass  # cancelled below, after another's failure
                    except Exception as exc:
                        failed[names[ref]] = exc
                        _cancel(pending)
    except KeyboardInterrupt:
        _cancel(list(refs))
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
