"""A fit's epochs on one worker, wherever it runs (``sessions``: a worker of Ray Train's group, or
the task of a one-worker fit): the recipe's model and data, the restore from the last checkpoint,
the epochs (seeded per epoch, so a resumed fit draws what an uninterrupted one would), a
checkpoint every ``train.checkpoint_every`` epochs, and on rank 0 the metrics, snapshots and the
final model under the model's directory."""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from study import storage
from study.config import TrainConfig
from study.train import layout
from study.train.recipes import RECIPES, Fit


def _progress(message: str) -> None:
    # Ray Train tees print() into its logger as well, so each line would show twice.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def run_loop(config: dict, session) -> None:
    """A fit's epochs on this worker (``sessions``: Ray Train's worker or the task's own)."""
    cfg: TrainConfig = config["train"]
    torch.set_num_threads(cfg.torch_threads)
    rank, world = session.rank, session.world
    torch.manual_seed(cfg.seed)  # same initial weights on every worker and for every rerun
    stream = None
    if config.get("stream"):  # a large set: this worker's equal share of the Ray Data stream
        from study.train.stream import shard_batches

        stream = shard_batches(session.dataset_shard("train"), cfg.seed, rank)
    fit = RECIPES[config["recipe"]].fit(config, rank, world, stream)
    model = session.prepare(fit.model)

    # Restore: weights, optimiser, schedule and metrics history of the last finished epoch, from
    # the checkpoint a rerun (or a restarted worker or task) is handed back.
    start_epoch, history, attempt = 0, [], 0
    state = session.restored()
    resumed = state is not None
    if resumed:
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
        if rank == 0 and not resumed and config.get("kill_at_epoch") == epoch + 1:
            fit.optimizer.register_step_post_hook(_kill_worker(config["name"], epoch + 1, session.commit_wait))
        pause = config.get("pause_at_epoch")
        if not resumed and pause and pause[0] == epoch + 1:  # fault pause_train_epoch (study.faults)
            _progress(f"[train {config['name']}] fault injected: pausing {pause[1]:g} s before epoch {epoch + 1}")
            time.sleep(pause[1])
        metrics = fit.run_epoch(model, epoch, gen)
        history.append({"epoch": epoch + 1, "attempt": attempt, **metrics})
        done = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.checkpoint_every and not done:
            continue
        # Checkpoint phase: state for resuming, metrics so far, and at the end the model itself.
        state = {
            "model": _unwrap(model).state_dict(),
            "optimizer": fit.optimizer.state_dict(),
            "scheduler": fit.scheduler.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "attempt": attempt,
        }
        if rank == 0:
            _export(config, fit, model, history, final=done)
            _progress(
                f"[train {config['name']}] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                f"({metrics['seconds']:.2f} s/epoch)"
            )
        session.report({"epoch": epoch + 1, "loss": metrics["loss"]}, state)


def _kill_worker(name: str, epoch: int, commit_wait: bool):
    """Fault ``kill_train_worker`` (``study.faults``): an optimiser hook that ends this worker's
    process abruptly after the first step of ``epoch``, midway through it."""

    def hook(optimizer, args, kwargs) -> None:
        # Ray Train commits a reported checkpoint when its controller next polls the worker (every
        # train.poll_s); a death before that resumes from the one before. Model a death after the
        # commit: several polls later. (A task's checkpoint is written before its report returns.)
        if commit_wait:
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
