"""The torchvision (transforms v2) training views: per-view blur/solarize as each method prescribes,
reproducible from the epoch's generator, and a method trains on them."""
from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from study.config import AugmentConfig, ModelConfig, TrainConfig
from study.train import augment_tv, loop
from study.train.methods import METHODS, method_params
from study.train.models import build_encoder

IMAGES = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
# Everything but blur and solarize off: the crop keeps the whole image, no flip, no jitter.
PLAIN = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter_prob=0.0, grayscale_prob=0.0, pipeline="torchvision")


def test_each_view_gets_its_own_blur_and_solarize_probability():
    cfg = AugmentConfig(**PLAIN, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 1.0))
    first, second = augment_tv.views(IMAGES, cfg, METHODS["byol"].views, 2, torch.Generator().manual_seed(0))
    assert first.dtype == torch.uint8 and first.shape == IMAGES.shape
    assert torch.equal(first, IMAGES)  # nothing applies to the first view
    assert torch.equal(second, TF.solarize(IMAGES, 128))  # the second is always solarized


def test_the_methods_prescription_applies_when_not_overridden():
    cfg = AugmentConfig(**PLAIN)  # BYOL: blur always on view 1, solarize never on it
    first, _ = augment_tv.views(IMAGES, cfg, ((1.0, 0.0), (0.0, 0.0)), 2, torch.Generator().manual_seed(1))
    assert not torch.equal(first, IMAGES)
    assert first.float().std() < IMAGES.float().std()  # blurred: less contrast between neighbours


def test_views_are_reproducible_from_the_generator_and_differ_between_views():
    cfg = AugmentConfig(pipeline="torchvision")
    a = augment_tv.views(IMAGES, cfg, METHODS["simclr"].views, 2, torch.Generator().manual_seed(5))
    b = augment_tv.views(IMAGES, cfg, METHODS["simclr"].views, 2, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])


def test_a_method_trains_on_torchvision_views():
    torch.manual_seed(0)
    cfg = TrainConfig(method="byol", epochs=1, lr=1e-3, weight_decay=0.0, augment=AugmentConfig(pipeline="torchvision"))
    params = method_params("byol", {})
    learner = METHODS["byol"].learner(lambda: build_encoder(ModelConfig(projector_dims=(64, 32)), "byol", params, 4),
                                      (64, 32), params)
    opt = loop.make_optimizer(learner, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    y = torch.zeros(4, dtype=torch.long)
    losses = [loop.train_epoch(learner, METHODS["byol"], params, [(IMAGES, y)], opt, sched, cfg,
                               torch.Generator().manual_seed(0), 0, 20)["loss"] for _ in range(10)]
    assert losses[-1] < losses[0]
