"""Training methods, picked by name from ``METHODS``: projector, number of views, loss, and a
teacher where the method has one (``study.train.teachers``).

SSL losses come from lightly, projectors are lightly's heads built from the configured sizes
(``study.train.learner.mlp``; DINO's is lightly's DINO head); the supervised baseline's
"projector" is its classifier, so reading out "projector" embeddings reads its logits. Each method declares a
frozen ``Params`` dataclass; ``train.params`` in the config is checked against it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from lightly.loss import BarlowTwinsLoss, NTXentLoss, VICRegLoss
from torch import nn
from torch.nn import functional as F

from study.config_load import build
from study.errors import ConfigError
from study.train import teachers
from study.train.learner import Learner, Step, mlp


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class SimCLRParams:
    temperature: float = 0.2


@dataclass(frozen=True)
class VICRegParams:
    lambda_param: float = 25.0
    mu_param: float = 25.0
    nu_param: float = 1.0


@dataclass(frozen=True)
class BarlowTwinsParams:
    lambda_param: float = 0.005


@dataclass(frozen=True)
class Method:
    """``loss(learner, views, labels, params, step)``: views are normalised (N, 3, H, W) batches;
    ``learner(x)`` -> (h, z, p) (``study.train.learner``), possibly under DistributedDataParallel.
    ``learner(make_encoder, projector sizes, params)`` builds it: the encoder and a method's extra
    parts; ``after_step``
    runs after each optimiser step (a teacher's moving average); ``measured`` names the network
    whose embeddings the study measures; ``max_projector_sizes`` the most sizes its projector
    takes (0: any number)."""

    params_type: type
    num_views: int
    build_projector: Callable[[int, Sequence[int], int, Any], nn.Module]
    loss: Callable[[nn.Module, list[torch.Tensor], torch.Tensor, Any, Step], torch.Tensor]
    uses_labels: bool = False
    learner: Callable[[Callable[[], nn.Module], Sequence[int], Any], Learner] = (
        lambda make_encoder, dims, params: Learner(make_encoder()))
    after_step: Callable[[Learner, Any, Step], None] | None = None
    measured: str = "encoder"
    max_projector_sizes: int = 0
    # (Gaussian blur, solarize) probability per view as the method's paper prescribes them, for the
    # torchvision augmentation pipeline (study.train.augment_tv).
    views: tuple[tuple[float, float], ...] = ((0.0, 0.0),)


def _classifier(in_dim, dims, num_classes, params):
    return nn.Linear(in_dim, num_classes)


def _supervised_loss(model, views, labels, params, step):
    _, logits, _ = model(views[0])
    return F.cross_entropy(logits, labels)


# Losses over the global batch (gathered across workers, as the papers' multi-GPU recipes; a
# no-op on one worker).


def _both_views(model, views):
    # One forward over both views keeps BatchNorm statistics shared, as in the reference recipes.
    _, z, _ = model(torch.cat(views))
    return z.chunk(2)


def _simclr_head(in_dim, dims, num_classes, params):
    return mlp(in_dim, dims, last_batch_norm=True)


def _simclr_loss(model, views, labels, params, step):
    return NTXentLoss(temperature=params.temperature, gather_distributed=True)(*_both_views(model, views))


def _plain_head(in_dim, dims, num_classes, params):
    return mlp(in_dim, dims, last_batch_norm=False)


def _vicreg_loss(model, views, labels, params, step):
    return VICRegLoss(params.lambda_param, params.mu_param, params.nu_param, gather_distributed=True)(*_both_views(model, views))


def _barlow_loss(model, views, labels, params, step):
    return BarlowTwinsLoss(lambda_param=params.lambda_param, gather_distributed=True)(*_both_views(model, views))


# SimCLR blurs half of either view; BYOL (and after it Barlow Twins, VICReg and DINO's global
# crops) always blurs the first view, rarely the second, and solarizes the second only.
SIMCLR_VIEWS = ((0.5, 0.0), (0.5, 0.0))
BYOL_VIEWS = ((1.0, 0.0), (0.1, 0.2))

METHODS: dict[str, Method] = {
    "supervised": Method(NoParams, 1, _classifier, _supervised_loss, uses_labels=True),
    "simclr": Method(SimCLRParams, 2, _simclr_head, _simclr_loss, views=SIMCLR_VIEWS),
    "vicreg": Method(VICRegParams, 2, _plain_head, _vicreg_loss, views=BYOL_VIEWS),
    "barlow_twins": Method(BarlowTwinsParams, 2, _plain_head, _barlow_loss, views=BYOL_VIEWS),
    "byol": Method(teachers.BYOLParams, 2, teachers.byol_projector, teachers.byol_loss,
                   learner=teachers.byol_learner, after_step=teachers.follow_teacher, views=BYOL_VIEWS),
    "dino": Method(teachers.DINOParams, 2, teachers.dino_projector, teachers.dino_loss, learner=teachers.dino_learner,
                   after_step=teachers.follow_teacher, measured="teacher", max_projector_sizes=3, views=BYOL_VIEWS),
}


def method_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Check a method name and its ``train.params`` mapping; return the typed params."""
    if name not in METHODS:
        raise ConfigError(f"train.method: unknown method '{name}'; choose from {sorted(METHODS)}")
    return build(METHODS[name].params_type, dict(raw), "train.params")


def params_dict(params: Any) -> dict:
    return asdict(params)
