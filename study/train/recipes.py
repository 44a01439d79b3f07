"""Training recipes, picked by name from ``RECIPES``: what one worker trains and how.

A recipe turns the driver's config into a ``Fit`` for this worker (its shard of the training
records, the model, optimiser, schedule, one epoch's function and the model's export). Its records
come from memory (the worker loads its share of a small set) or from ``stream``, a function
``(epoch, batch size) -> numpy batches`` of this worker's shard of a streamed set (see
``study.train.stream``). Plain PyTorch, no Ray: the Ray edge (``study.train.driver``) does
checkpoints, resumption, distribution and progress the same way for every recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
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


def ssl_fit(config: dict, rank: int, world: int, stream: Callable | None = None, arrays=None) -> Fit:
    """SSL encoders and the supervised baseline: images and labels of the training splits (or the
    given ``arrays``: (images (n, 3, S, S) uint8, labels (n,)) in a fixed order)."""
    from study.data.loading import load_training_set
    from study.train import loop
    from study.train.methods import METHODS, method_params
    from study.train.models import build_encoder, save_model

    cfg: TrainConfig = config["train"]
    model_cfg: ModelConfig = config["model"]
    method, params = METHODS[cfg.method], method_params(cfg.method, cfg.params)
    batch_size_per_worker = max(2, cfg.global_batch_size // world)
    if stream is None:
        images, labels = arrays or load_training_set(config["data_root"], config["splits_dir"], config["splits"],
                                                     config["inputs"])
        share = loop.worker_share(len(images), rank, world)
        images, labels = torch.from_numpy(images[share]), torch.from_numpy(labels[share])
        n_local = len(images)

        def batches(epoch: int, gen: torch.Generator):
            return loop.memory_batches(batch_size_per_worker, gen, images, labels)
    else:
        n_local = config["train_records"] // world

        def batches(epoch: int, gen: torch.Generator):
            return ((torch.from_numpy(b["image"]), torch.from_numpy(b["label"]))
                    for b in stream(epoch, batch_size_per_worker))

    learner = method.learner(lambda: build_encoder(model_cfg, cfg.method, params, config["num_classes"],
                                                   config["inputs"].size),
                             model_cfg.projector_dims, params)
    optimizer = loop.make_optimizer(learner, cfg)
    steps = loop.steps_per_epoch(n_local, batch_size_per_worker)
    scheduler = loop.make_scheduler(optimizer, cfg, steps)

    def run_epoch(model: nn.Module, epoch: int, gen: torch.Generator) -> dict:
        return loop.train_epoch(model, method, params, batches(epoch, gen), optimizer, scheduler, cfg, gen,
                                epoch=epoch, total_steps=cfg.epochs * steps)

    meta = {
        "method": cfg.method,
        "params": dict(cfg.params),
        "model": config_to_dict(model_cfg),
        "num_classes": config["num_classes"],
        "image_size": config["inputs"].size,
        "resize": config["inputs"].rule,
        "trained_on": list(config["splits"]),
    }
    # The network the study measures: the encoder, or the teacher that follows it (DINO).
    return Fit(learner, optimizer, scheduler, run_epoch,
               lambda m, history: save_model(getattr(m, method.measured), meta))


def clip_fit(config: dict, rank: int, world: int, stream: Callable | None = None) -> Fit:
    """CLIP-style image–text models (open_clip, from scratch): images and captions of the training
    splits; captions are randomized per epoch when ``train.text_randomization.p`` > 0."""
    import numpy as np

    from study.core.splits import id_hash64
    from study.core.text_random import randomize_tokens
    from study.data.loading import load_training_pairs
    from study.train import clip, loop

    cfg: TrainConfig = config["train"]
    model_cfg: ModelConfig = config["model"]
    params = clip.clip_params(cfg.params)

    def id_keys(ids) -> np.ndarray:
        return (id_hash64(list(ids)) >> np.uint64(1)).astype(np.int64)  # non-negative, as randomize_tokens wants

    model, tokenizer = clip.build_clip(model_cfg.clip, config["inputs"].size, params)
    mask_id = clip.mask_token_id(tokenizer)
    rand = cfg.text_randomization
    batch_size_per_worker = max(2, cfg.global_batch_size // world)

    def epoch_tokens(captions, keys, epoch: int) -> torch.Tensor:
        tokens = clip.tokenize(tokenizer, captions).numpy()
        if rand.p > 0:
            maskable = clip.maskable_positions(torch.from_numpy(tokens), tokenizer).numpy()
            tokens = randomize_tokens(tokens, rand.p, rand.mode, maskable, mask_id, cfg.seed, epoch, keys)
        return torch.from_numpy(tokens)

    if stream is None:
        images, captions = load_training_pairs(config["data_root"], config["splits_dir"], config["splits"],
                                               config["inputs"])
        # Keys are positions in the whole (id-ordered) training set, so each caption's randomization
        # does not depend on how records are sharded across workers.
        share = loop.worker_share(len(captions), rank, world)
        keys = np.arange(len(captions), dtype=np.int64)[share]
        images, captions = torch.from_numpy(images[share]), [captions[i] for i in range(len(captions))[share]]
        n_local = len(images)

        def batches(epoch: int, gen: torch.Generator):
            tokens = epoch_tokens(captions, keys, epoch)
            return loop.memory_batches(batch_size_per_worker, gen, images, tokens)
    else:
        n_local = config["train_records"] // world

        def batches(epoch: int, gen: torch.Generator):
            # Streamed rows have no position; a hash of the id keys their randomization instead.
            return ((torch.from_numpy(b["image"]), epoch_tokens(list(b["caption"]), id_keys(b["id"]), epoch))
                    for b in stream(epoch, batch_size_per_worker))

    optimizer = loop.make_optimizer(model, cfg)
    scheduler = loop.make_scheduler(optimizer, cfg, loop.steps_per_epoch(n_local, batch_size_per_worker))
    loss_fn = clip.make_loss(rank, world)

    def run_epoch(module: nn.Module, epoch: int, gen: torch.Generator) -> dict:
        return clip.clip_epoch(module, loss_fn, batches(epoch, gen), optimizer, scheduler)

    meta = {
        "method": "clip",
        "params": dict(cfg.params),
        "clip": model_cfg.clip,
        "image_size": config["inputs"].size,
        "resize": config["inputs"].rule,
        "trained_on": list(config["splits"]),
        "text_randomization": {"p": rand.p, "mode": rand.mode},
    }
    return Fit(model, optimizer, scheduler, run_epoch, lambda m, history: clip.save_clip(m, meta))


def clip_skipped(data_root: str, splits_dir: str, splits) -> dict[str, int]:
    """Training records a CLIP-style model cannot use, by reason (the in-memory path's count)."""
    from study.data.loading import training_pair_ids

    _, empty = training_pair_ids(data_root, splits_dir, splits)
    return {"empty_caption": empty} if empty else {}


def crop_fit(config: dict, rank: int, world: int, stream: Callable | None = None) -> Fit:
    """The one-model test's crop classifier: the supervised recipe on the crops the
    attack sees (``config["crop"]``, the embed stage's rule) of the training splits' records (the
    public set), predicting their label. In memory, records in id order."""
    import dataclasses
    import sys

    import numpy as np

    from study.data import records
    from study.errors import DataError
    from study.data.loading import read_split
    from study.embed.views import labelled_crops

    if stream is not None:
        raise ValueError("the crop classifier trains in memory (train.stream=never for it)")
    ids = sorted(str(i) for s in config["splits"] for i in read_split(config["splits_dir"], s)[0])
    table = records.read_records(config["data_root"], ids, columns=["id", "image", "width", "height", "label", "boxes"])
    got, images, labels = labelled_crops(table, config["crop"], config["inputs"])
    if rank == 0:  # the records it cannot use, counted in the stage's log
        sys.stdout.write(f"[train crop_classifier] {len(got)} of {len(ids)} public records have a label and a crop "
                         f"under the {config['crop'].rule} rule; {len(ids) - len(got)} left out\n")
        sys.stdout.flush()
    if not got:
        raise DataError(f"the crop classifier has no public record with a label and a crop ({len(ids)} public records)")
    order = np.argsort(np.asarray(got, dtype=str), kind="stable")
    train = dataclasses.replace(config["train"], method="supervised", params={})
    return ssl_fit({**config, "train": train}, rank, world, arrays=(images[order], labels[order]))


@dataclass(frozen=True)
class Recipe:
    """A training recipe: ``fit(config, rank, world, stream)`` builds one worker's model and
    epoch; ``reads_text`` when it trains on captions too (a streamed set then drops records
    without one); ``skipped(data_root, splits_dir, splits)`` counts, in memory, the records it
    leaves out by reason (None: it uses every record)."""

    fit: Callable[..., Fit]
    reads_text: bool = False
    skipped: Callable[..., dict[str, int]] | None = None


RECIPES: dict[str, Recipe] = {
    "ssl": Recipe(ssl_fit),
    "clip": Recipe(clip_fit, reads_text=True, skipped=clip_skipped),
    "crop": Recipe(crop_fit),
}
