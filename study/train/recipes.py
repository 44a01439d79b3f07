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
    images = torch.from_numpy(images[rank::world])
    labels = torch.from_numpy(labels[rank::world])
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


RECIPES: dict[str, Callable[[dict, int, int], Fit]] = {"ssl": ssl_fit}
