"""Training recipes, picked by name from ``RECIPES``: what one worker trains and how.

A recipe turns the driver's config into a ``Fit`` for this worker (its shard of the training
records, the model, optimiser, schedule, one epoch's function and the model's export). Plain
PyTorch, no Ray: the Ray Train edge (``study.train.driver``) does checkpoints, resumption,
distribution and progress the same way for every recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from study.config import ModelConfig, TrainConfig
from study.config_load import config_to_dict


@dataclass
class Fit:
    """One worker's training state. ``run_epoch(model, epoch, gen)`` -> metrics (with "loss")."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    run_epoch: Callable[[nn.Module, int, torch.Generator], dict]
    export: Callable[[nn.Module, list], bytes]  # (unwrapped model, history) -> model file bytes


def ssl_fit(config: dict, rank: int, world: int) -> Fit:
    """SSL encoders and the supervised baseline: images and labels of the training splits."""
    from study.data.loading import load_training_set
    from study.train import loop
    from study.train.methods import METHODS, method_params
    from study.train.models import build_encoder, save_model

    cfg: TrainConfig = config["train"]
    model_cfg: ModelConfig = config["model"]
    method, params = METHODS[cfg.method], method_params(cfg.method, cfg.params)
    images, labels = load_training_set(config["data_root"], config["splits_dir"], config["splits"])
    share = loop.worker_share(len(images), rank, world)
    images = torch.from_numpy(images[share])
    labels = torch.from_numpy(labels[share])
    batch_size_per_worker = max(2, cfg.global_batch_size // world)
    encoder = build_encoder(model_cfg, cfg.method, params, config["num_classes"])
    optimizer = loop.make_optimizer(encoder, cfg)
    scheduler = loop.make_scheduler(optimizer, cfg, loop.steps_per_epoch(len(images), batch_size_per_worker))

    def run_epoch(model: nn.Module, epoch: int, gen: torch.Generator) -> dict:
        return loop.train_epoch(model, method, params, images, labels, optimizer, scheduler, cfg, batch_size_per_worker, gen)

    meta = {
        "method": cfg.method,
        "params": dict(cfg.params),
        "model": config_to_dict(model_cfg),
        "num_classes": config["num_classes"],
        "image_size": config["image_size"],
        "trained_on": list(config["splits"]),
    }
    return Fit(encoder, optimizer, scheduler, run_epoch, lambda m, history: save_model(m, meta))


def clip_fit(config: dict, rank: int, world: int) -> Fit:
    """CLIP-style image–text models (open_clip, from scratch): images and captions of the training
    splits; captions are randomized per epoch when ``train.text_randomization.p`` > 0."""
    import numpy as np

    from study.core.text_random import randomize_tokens
    from study.data.loading import load_training_pairs
    from study.train import clip, loop

    cfg: TrainConfig = config["train"]
    model_cfg: ModelConfig = config["model"]
    params = clip.clip_params(cfg.params)
    images, captions = load_training_pairs(config["data_root"], config["splits_dir"], config["splits"])
    model, tokenizer = clip.build_clip(model_cfg.clip, config["image_size"], params)
    tokens = clip.tokenize(tokenizer, captions).numpy()
    # Keys are positions in the whole (id-ordered) training set, so each caption's randomization
    # does not depend on how records are sharded across workers.
    share = loop.worker_share(len(tokens), rank, world)
    keys = np.arange(len(tokens), dtype=np.int64)[share]
    images = torch.from_numpy(images[share])
    tokens = tokens[share]
    maskable = clip.maskable_positions(torch.from_numpy(tokens), tokenizer).numpy()
    mask_id = clip.mask_token_id(tokenizer)
    rand = cfg.text_randomization
    batch_size_per_worker = max(2, cfg.global_batch_size // world)
    optimizer = loop.make_optimizer(model, cfg)
    scheduler = loop.make_scheduler(optimizer, cfg, loop.steps_per_epoch(len(images), batch_size_per_worker))
    loss_fn = clip.make_loss(rank, world)

    def run_epoch(module: nn.Module, epoch: int, gen: torch.Generator) -> dict:
        epoch_tokens = tokens
        if rand.p > 0:
            epoch_tokens = randomize_tokens(tokens, rand.p, rand.mode, maskable, mask_id, cfg.seed, epoch, keys)
        return clip.clip_epoch(module, loss_fn, images, torch.from_numpy(epoch_tokens), optimizer, scheduler,
                               batch_size_per_worker, gen)

    meta = {
        "method": "clip",
        "params": dict(cfg.params),
        "clip": model_cfg.clip,
        "image_size": config["image_size"],
        "trained_on": list(config["splits"]),
        "text_randomization": {"p": rand.p, "mode": rand.mode},
    }
    return Fit(model, optimizer, scheduler, run_epoch, lambda m, history: clip.save_clip(m, meta))


def clip_skipped(data_root: str, splits_dir: str, splits) -> dict[str, int]:
    """Training records a CLIP-style model cannot use, by reason (counted in the driver)."""
    from study.data.loading import training_pair_ids

    _, empty = training_pair_ids(data_root, splits_dir, splits)
    return {"empty_caption": empty} if empty else {}


RECIPES: dict[str, Callable[[dict, int, int], Fit]] = {"ssl": ssl_fit, "clip": clip_fit}
# Recipe -> (data_root, splits_dir, splits) -> {reason: records skipped}; recipes absent use all.
TRAINING_SKIPS: dict[str, Callable[..., dict[str, int]]] = {"clip": clip_skipped}
