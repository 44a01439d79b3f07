"""Where a fit's loop (``fit_loop.run_loop``) runs, and what it asks of that place: its rank and the
number of workers, its share of a streamed set, the model on its device, the state of its last
checkpoint, and a way to report a new one.

* ``RayTrainSession``: a worker of Ray Train's worker group (``TorchTrainer``): checkpoints are
  Ray Train's, so a rerun with the same ``RunConfig`` and a worker group Ray Train restarted
  both resume from the last one.
* ``TaskSession``: the one worker of a fit from memory on the study's own instance, running in the
  Ray task that fits the model (``train.runner: auto``). Ray Train would start a controller, a
  worker group and three helper actors for it, five processes whose start costs a small study
  more than its training; here the task itself is the worker. Its checkpoint is one file under the
  model's directory, written atomically; the task is retried when its process is lost (as Ray
  Train restarts a failed worker group) and a rerun resumes from the file.

Both sessions give the loop the same state dict, so a fit's numbers do not depend on where it ran.
"""
from __future__ import annotations

import io
import os
import tempfile

import torch

from study import storage

TASK_CHECKPOINT = "checkpoint/state.pt"  # under the model's directory: the task runner's last checkpoint


def _load(fh) -> dict:
    # The product's own file (weights, optimiser and scheduler state, metrics history).
    return torch.load(fh, map_location="cpu", weights_only=False)


def _quiet_checkpoint_logs() -> None:
    """Ray Train narrates every checkpoint at INFO, partly from loggers ``LoggingConfig`` does not
    reach (one is named after its source file); in this worker, every logger of Ray Train's
    (``ray.train.*``, or named after a file of its package) keeps to warnings."""
    import logging

    import ray.train

    package = os.path.dirname(ray.train.__file__)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train.") or name.startswith(package):
            logging.getLogger(name).setLevel(logging.WARNING)


class RayTrainSession:
    """A worker of Ray Train's worker group."""

    def __init__(self):
        import ray.train

        _quiet_checkpoint_logs()
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.commit_wait = True  # a reported checkpoint is committed at the controller's next poll

    def dataset_shard(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # to this worker's device; DDP when world > 1

    def restored(self) -> dict | None:
        """The last checkpoint's state, handed back by Ray Train to a rerun and to a worker group
        it restarted; None for a fresh fit."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.pt"), "rb") as fh:
            return _load(fh)

    def report(self, metrics: dict, state: dict) -> None:
        import ray.train
        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))


class TaskSession:
    """The one worker of a fit run in a Ray task; its checkpoint is ``out_dir``/``TASK_CHECKPOINT``."""

    rank, world, commit_wait = 0, 1, False

    def __init__(self, out_dir: str, use_gpu: bool):
        self.uri = storage.join(out_dir, TASK_CHECKPOINT)
        self.device = torch.device("cuda" if use_gpu else "cpu")

    def dataset_shard(self, name: str):
        raise RuntimeError("a streamed fit runs on Ray Train (train.runner)")  # never chosen for one

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def restored(self) -> dict | None:
        if not storage.exists(self.uri):
            return None
        return _load(io.BytesIO(storage.read_bytes(self.uri)))

    def report(self, metrics: dict, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        storage.write_bytes(self.uri, buffer.getvalue())  # atomic: a lost task leaves the last whole file
