"""The training recipe in plain PyTorch: optimiser, schedule, one epoch. Knows nothing of Ray."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Iterable

import torch

from study.config import TrainConfig
from study.train.augment import random_view
from study.train.learner import Step
from study.train.methods import Method
from study.train.models import normalize


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (a teacher's follow by moving average instead)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to zero, stepped once per batch."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def worker_share(n: int, rank: int, world: int) -> slice:
    """This worker's records of an id-ordered training set: every world-th from its rank, cut to
    n // world, so every worker holds the same count and runs the same number of steps (unequal
    shares would leave the other workers waiting in a collective, or mismatch its sizes)."""
    return slice(rank, rank + world * (n // world), world)


def steps_per_epoch(n_local: int, batch_size_per_worker: int) -> int:
    # Drop the ragged last batch: a batch of one breaks BatchNorm and the contrastive losses.
    return max(1, n_local // batch_size_per_worker)


def memory_batches(batch_size_per_worker: int, gen: torch.Generator, *arrays: torch.Tensor):
    """Batches of in-memory arrays (aligned on dim 0) in a random order from ``gen``, dropping the
    ragged last batch: tuples of slices, one per array."""
    order = torch.randperm(len(arrays[0]), generator=gen)
    for step in range(steps_per_epoch(len(arrays[0]), batch_size_per_worker)):
        idx = order[step * batch_size_per_worker : (step + 1) * batch_size_per_worker]
        yield tuple(a[idx] for a in arrays)


def _batched_views(images: torch.Tensor, cfg, method: Method, gen: torch.Generator) -> list[torch.Tensor]:
    x = normalize(images)
    return [random_view(x, cfg, gen) for _ in range(method.num_views)]


def _torchvision_views(images: torch.Tensor, cfg, method: Method, gen: torch.Generator) -> list[torch.Tensor]:
    from study.train import augment_tv

    return [normalize(v) for v in augment_tv.views(images, cfg, method.views, method.num_views, gen)]


# train.augment.pipeline -> (uint8 batch, AugmentConfig, method, generator) -> normalised views
AUGMENTATIONS = {"batched": _batched_views, "torchvision": _torchvision_views}


def precision(name: str, device: torch.device):
    """(autocast context, gradient scaler) for ``train.precision``: bf16 autocasts on CPU or GPU;
    fp16 autocasts on a GPU only and scales the loss against underflow; fp32 does neither."""
    if name == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU (ray.use_gpu=true); on CPU use bf16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    return autocast, torch.amp.GradScaler(device.type, enabled=name == "fp16")


def train_epoch(
    learner: torch.nn.Module,
    method: Method,
    params,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: TrainConfig,
    gen: torch.Generator,
    epoch: int = 0,
    total_steps: int = 1,
) -> dict:
    """One pass over this worker's batches of (images (B, 3, H, W) uint8, labels (B,)): from
    memory (``memory_batches``) or streamed from a Ray Data shard. ``learner`` is a
    ``study.train.learner.Learner`` (possibly under DistributedDataParallel); the scheduler's
    step count says where training stands out of ``total_steps``.

    Returns the epoch's mean loss and its wall time.
    """
    learner.train()
    parts = getattr(learner, "module", learner)
    device = next(learner.parameters()).device
    autocast, scaler = precision(cfg.precision, device)
    start = time.perf_counter()
    total, count = 0.0, 0
    augment = AUGMENTATIONS[cfg.augment.pipeline]
    for images, labels in batches:
        views = augment(images.to(device, non_blocking=True), cfg.augment, method, gen)
        step = Step(epoch, scheduler.last_epoch, total_steps)
        with autocast:
            loss = method.loss(learner, views, labels.to(device), params, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.float()).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if method.after_step is not None:
            method.after_step(parts, params, step)
        total += float(loss.detach())
        count += 1
    return {"loss": total / max(1, count), "seconds": time.perf_counter() - start, "lr": scheduler.get_last_lr()[0]}
