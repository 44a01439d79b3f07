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


def draw_view(n: int, cfg: AugmentConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The random parameters of ``n`` views, drawn in a fixed order from the CPU generator (so a
    view is reproducible on any device, and views drawn one record at a time can be applied to a
    whole batch at once)."""
    p = {"box": crop_boxes(n, cfg, gen)}
    if cfg.flip:
        p["flip"] = torch.rand(n, generator=gen) < 0.5
    for key in ("brightness", "contrast", "saturation"):
        strength = getattr(cfg, key)
        if strength > 0:
            p[key] = 1 + (torch.rand(n, generator=gen) * 2 - 1) * strength
    if cfg.grayscale_prob > 0:
        p["grayscale"] = torch.rand(n, generator=gen) < cfg.grayscale_prob
    return p


def apply_view(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The views ``p`` describes of a normalised batch (N, 3, H, W): one ``grid_sample`` call crops
    and resizes every image, then colour jitter and grayscale."""
    n = x.shape[0]
    box = p["box"]
    sx = torch.where(p["flip"], -box[:, 2], box[:, 2]) if "flip" in p else box[:, 2]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = box[:, 0]
    theta[:, 1, 1] = box[:, 3]
    theta[:, 1, 2] = box[:, 1]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def per_image(key: str) -> torch.Tensor:
        return p[key].view(n, 1, 1, 1).to(x.device)

    if "brightness" in p:
        x = x + (per_image("brightness") - 1)  # additive shift on the normalised scale
    if "contrast" in p:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * per_image("contrast") + mean
    if "saturation" in p:
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * per_image("saturation") + gray
    if "grayscale" in p:
        x = torch.where(per_image("grayscale"), x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x


def random_view(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One augmented view of a normalised batch (N, 3, H, W), same shape out."""
    return apply_view(x, draw_view(x.shape[0], cfg, gen))
