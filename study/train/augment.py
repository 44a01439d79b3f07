"""Batched training views: random-resized crop, flip, colour jitter, grayscale.

Written by hand because torchvision's RandomResizedCrop draws the area scale uniformly and runs
image by image; here the scale is log-uniform (so a fair share of views at scale ~0.04 show only
background, which is what lets a model tie backgrounds to labels) and one ``grid_sample`` call
crops and resizes the whole batch.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from study.config import AugmentConfig


def _log_uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def crop_boxes(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(n, 4) crops as (centre x, centre y, half-width, half-height) in [-1, 1] coordinates.

    The half-extents are also the side fractions, so the area fraction is w * h:
    area ~ log-uniform(scale), aspect ~ log-uniform(ratio); sides clipped to the image.
    """
    area = _log_uniform(*cfg.scale, n, gen)
    ratio = _log_uniform(*cfg.ratio, n, gen)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    return torch.stack([cx, cy, w, h], dim=1)


def random_view(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One augmented view of a normalised batch (N, 3, H, W), same shape out."""
    n = x.shape[0]
    # Random draws come from the CPU generator (reproducible on any device), then move to x's.
    box = crop_boxes(n, cfg, gen)
    sx = box[:, 2]
    if cfg.flip:
        sx = torch.where(torch.rand(n, generator=gen) < 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = box[:, 0]
    theta[:, 1, 1] = box[:, 3]
    theta[:, 1, 2] = box[:, 1]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _colour_jitter(out, cfg, gen)


def _factor(n: int, strength: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (1 + (torch.rand(n, generator=gen) * 2 - 1) * strength).view(n, 1, 1, 1).to(device)


def _colour_jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if cfg.brightness > 0:
        x = x + (_factor(n, cfg.brightness, gen, x.device) - 1)  # additive shift on the normalised scale
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _factor(n, cfg.contrast, gen, x.device) + mean
    if cfg.saturation > 0:
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * _factor(n, cfg.saturation, gen, x.device) + gray
    if cfg.grayscale_prob > 0:
        pick = (torch.rand(n, generator=gen) < cfg.grayscale_prob).view(n, 1, 1, 1).to(x.device)
        x = torch.where(pick, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x
