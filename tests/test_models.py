"""Backbones and training methods: shapes, a learning step, and the saved form."""
from __future__ import annotations

import pytest
import torch

from study.config import ModelConfig, TrainConfig
from study.errors import ConfigError
from study.train import loop
from study.train.methods import METHODS, method_params
from study.train.models import BACKBONES, build_encoder, load_model, save_model


@pytest.mark.parametrize("backbone,dim", [("small_cnn", 256), ("resnet18", 512)])
def test_backbones_embed_small_images(backbone, dim):
    enc = build_encoder(ModelConfig(backbone=backbone, projector_dims=(32, 16)), "simclr", method_params("simclr", {}), 10)
    h, z = enc.eval()(torch.randn(3, 3, 32, 32))
    assert h.shape == (3, dim) and z.shape == (3, 16)
    assert set(BACKBONES) >= {"small_cnn", "resnet18"}


def test_supervised_projector_is_the_classifier():
    enc = build_encoder(ModelConfig(), "supervised", method_params("supervised", {}), 7)
    _, z = enc.eval()(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 7)


def _learner(method: str, dims=(64, 32), params=None):
    params = params or method_params(method, {})
    return METHODS[method].learner(lambda: build_encoder(ModelConfig(projector_dims=dims), method, params, 4),
                                   dims, params), params


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_lowers_its_loss_on_a_fixed_batch(method):
    """A few optimiser steps through the training loop's own epoch function lower each method's
    loss on a fixed batch (teachers follow after every step)."""
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, epochs=1, lr=1e-3, weight_decay=0.0)
    dims = (64, 32)
    # DINO's centring makes its loss rise again once the student matches a sharpened teacher (that
    # is what keeps it from collapsing); with the centre held, its loss falls like the others'.
    learner, params = _learner(method, dims, method_params(method, {"center_momentum": 1.0} if method == "dino" else {}))
    opt = loop.make_optimizer(learner, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(16) % 4
    gen = torch.Generator().manual_seed(0)
    first = loop.train_epoch(learner, METHODS[method], params, [(x, y)], opt, sched, cfg, gen, 0, 30)["loss"]
    for step in range(12):
        gen = torch.Generator().manual_seed(0)  # the same views each step: the loss must fall on them
        last = loop.train_epoch(learner, METHODS[method], params, [(x, y)], opt, sched, cfg, gen, 0, 30)["loss"]
    assert last < first


def test_method_params_are_checked():
    assert method_params("simclr", {"temperature": 0.5}).temperature == 0.5
    with pytest.raises(ConfigError, match="train.params"):
        method_params("simclr", {"temprature": 0.5})
    with pytest.raises(ConfigError, match="unknown method"):
        method_params("dinov9", {})


def test_schedule_warms_up_then_decays_to_zero():
    enc = torch.nn.Linear(2, 2)
    cfg = TrainConfig(epochs=10, warmup_epochs=2, lr=1.0)
    opt = loop.make_optimizer(enc, cfg)
    sched = loop.make_scheduler(opt, cfg, steps_per_epoch=3)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[6:], lrs[7:]))


@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (7, 2), (2, 3), (100, 4)])
def test_worker_shares_are_equal_disjoint_and_cover_all_but_the_remainder(n, world):
    from study.train.loop import worker_share

    shares = [list(range(n))[worker_share(n, r, world)] for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == n // world
    taken = [i for s in shares for i in s]
    assert len(set(taken)) == len(taken) == n - n % world


@pytest.mark.parametrize("method,dims", [("vicreg", (256, 128)), ("dino", (32, 8, 16)), ("byol", (32, 16))])
def test_the_measured_network_round_trips(method, dims):
    """What the recipe exports (DINO: its teacher; the others: the encoder) loads back as an
    encoder that embeds exactly as it did."""
    learner, _ = _learner(method, dims)
    measured = getattr(learner, METHODS[method].measured).eval()
    meta = {"method": method, "params": {}, "model": {"backbone": "small_cnn", "projector_dims": list(dims)},
            "num_classes": 4, "image_size": 32}
    again, meta2 = load_model(save_model(measured, meta))
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        for a, b in zip(measured(x), again(x)):
            torch.testing.assert_close(a, b)
    assert meta2 == meta


def test_bf16_mixed_precision_trains_and_keeps_fp32_weights():
    torch.manual_seed(0)
    cfg = TrainConfig(method="simclr", epochs=1, lr=1e-3, weight_decay=0.0, precision="bf16")
    learner, params = _learner("simclr")
    opt = loop.make_optimizer(learner, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    x, y = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 4
    losses = [loop.train_epoch(learner, METHODS["simclr"], params, [(x, y)], opt, sched, cfg,
                               torch.Generator().manual_seed(0), 0, 10)["loss"] for _ in range(8)]
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        loop.precision("fp16", torch.device("cpu"))
