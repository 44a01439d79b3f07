"""Batched training views (study.train.augment): crop geometry, log-uniform scale, determinism."""
from __future__ import annotations

import math

import torch

from study.config import AugmentConfig
from study.train.augment import crop_boxes, random_view

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, grayscale_prob=0.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crops_lie_inside_the_image():
    cfg = AugmentConfig(scale=(0.04, 1.0), ratio=(0.5, 2.0))
    box = crop_boxes(5000, cfg, gen(1))
    assert box.shape == (5000, 4)
    cx, cy, w, h = box.unbind(1)
    # (cx, cy) is the centre and (w, h) the half-extent in [-1, 1] coordinates.
    assert torch.all(w > 0) and torch.all(h > 0) and torch.all(w <= 1) and torch.all(h <= 1)
    assert torch.all(cx - w >= -1 - 1e-6) and torch.all(cx + w <= 1 + 1e-6)
    assert torch.all(cy - h >= -1 - 1e-6) and torch.all(cy + h <= 1 + 1e-6)


def test_area_fraction_is_log_uniform():
    cfg = AugmentConfig(scale=(0.04, 1.0), ratio=(1.0, 1.0))
    n = 20000
    cx, cy, w, h = crop_boxes(n, cfg, gen(2)).unbind(1)
    area = w * h  # fraction of the image: (2w * 2h) / 4
    assert torch.all(area >= 0.04 - 1e-6) and torch.all(area <= 1 + 1e-6)
    expected = math.log(0.1 / 0.04) / math.log(1 / 0.04)  # ~0.285; uniform would give ~0.0625
    share = (area < 0.1).float().mean().item()
    sd = math.sqrt(expected * (1 - expected) / n)
    assert abs(share - expected) < 5 * sd
    # Also the median: log-uniform median is sqrt(0.04 * 1) = 0.2.
    assert abs(area.median().item() - 0.2) < 0.01


def test_aspect_ratio_respected_when_not_clipped():
    cfg = AugmentConfig(scale=(0.05, 0.1), ratio=(2.0, 2.0))
    _, _, w, h = crop_boxes(200, cfg, gen(3)).unbind(1)
    torch.testing.assert_close(w / h, torch.full_like(w, 2.0))


def test_random_view_shape_dtype_and_determinism():
    x = torch.randn(6, 3, 16, 16, generator=gen(4))
    cfg = AugmentConfig()
    a = random_view(x, cfg, gen(5))
    b = random_view(x, cfg, gen(5))
    c = random_view(x, cfg, gen(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_identity_view_equals_input():
    x = torch.randn(4, 3, 12, 9, generator=gen(7))
    cfg = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, **NO_JITTER)
    torch.testing.assert_close(random_view(x, cfg, gen(8)), x, atol=1e-5, rtol=1e-5)


def test_always_flipping_mirrors_the_input():
    # With scale 1 and flip on, each view is the input or its horizontal mirror.
    x = torch.randn(32, 3, 8, 8, generator=gen(9))
    cfg = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, **NO_JITTER)
    out = random_view(x, cfg, gen(10))
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 4 <= sum(mirrored) <= 28
