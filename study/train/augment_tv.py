"""Training views with torchvision transforms v2, as the SSL papers prescribe them
(``train.augment.pipeline: torchvision``): random-resized crop, flip, colour jitter (applied with
``jitter_prob``), grayscale, Gaussian blur and solarization, the last two with per-view
probabilities — the methods' asymmetric views (BYOL, Barlow Twins, VICReg, DINO: blur always on
the first view and rarely on the second, solarization on the second only; SimCLR: blur on half of
either). Each method's prescription is ``Method.views`` (``study.train.methods``);
``train.augment.blur_prob`` / ``solarize_prob`` override it.

Transforms v2 draw one set of parameters per call, so each image is transformed on its own; their
randomness comes from torch's global generator, seeded here from the epoch's generator so a
resumed run draws the same views. Plain PyTorch, no Ray.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

from study.config import AugmentConfig


def _per_view(values: Sequence[float], view: int) -> float:
    return values[min(view, len(values) - 1)]


def pipeline(cfg: AugmentConfig, size: int, blur: float, solarize: float) -> v2.Compose:
    kernel = max(3, (size // 10) | 1)  # about a tenth of the side, odd (SimCLR's recipe)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), antialias=True),
        v2.RandomHorizontalFlip(0.5 if cfg.flip else 0.0),
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_prob),
        v2.RandomGrayscale(cfg.grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur),
        v2.RandomSolarize(threshold=128, p=solarize),
    ])


def views(images: torch.Tensor, cfg: AugmentConfig, prescribed: Sequence[tuple[float, float]], num_views: int,
          gen: torch.Generator) -> list[torch.Tensor]:
    """``num_views`` augmented copies of a uint8 batch (N, 3, H, W), each uint8 of the same shape.
    ``prescribed``: the method's (blur, solarize) probability per view."""
    out = []
    for view in range(num_views):
        blur = _per_view(cfg.blur_prob, view) if cfg.blur_prob else _per_view([b for b, _ in prescribed], view)
        solarize = (_per_view(cfg.solarize_prob, view) if cfg.solarize_prob
                    else _per_view([s for _, s in prescribed], view))
        transform = pipeline(cfg, images.shape[-1], blur, solarize)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out.append(torch.stack([transform(image) for image in images.cpu()]).to(images.device))
    return out
