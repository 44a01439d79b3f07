"""Training methods, picked by name from ``METHODS``: projector, number of views, loss.

SSL losses and projection heads come from lightly; the supervised baseline's "projector" is its
classifier, so reading out "projector" embeddings reads its logits. Each method declares a
frozen ``Params`` dataclass; ``train.params`` in the config is checked against it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from lightly.loss import NTXentLoss, VICRegLoss
from lightly.models.modules.heads import SimCLRProjectionHead, VICRegProjectionHead
from torch import nn
from torch.nn import functional as F

from study.config_load import build
from study.errors import ConfigError


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
class Method:
    """``loss(encoder, views, labels, params)``: views are normalised (N, 3, H, W) batches."""

    params_type: type
    num_views: int
    build_projector: Callable[[int, Sequence[int], int, Any], nn.Module]
    loss: Callable[[nn.Module, list[torch.Tensor], torch.Tensor, Any], torch.Tensor]
    uses_labels: bool = False


def _classifier(in_dim, dims, num_classes, params):
    return nn.Linear(in_dim, num_classes)


def _supervised_loss(encoder, views, labels, params):
    _, logits = encoder(views[0])
    return F.cross_entropy(logits, labels)


def _simclr_head(in_dim, dims, num_classes, params):
    return SimCLRProjectionHead(in_dim, dims[0], dims[-1], num_layers=len(dims))


def _simclr_loss(encoder, views, labels, params):
    # One forward over both views keeps BatchNorm statistics shared, as in the reference recipe.
    _, z = encoder(torch.cat(views))
    z0, z1 = z.chunk(2)
    return NTXentLoss(temperature=params.temperature)(z0, z1)


def _vicreg_head(in_dim, dims, num_classes, params):
    return VICRegProjectionHead(in_dim, dims[0], dims[-1], num_layers=len(dims))


def _vicreg_loss(encoder, views, labels, params):
    _, z = encoder(torch.cat(views))
    z0, z1 = z.chunk(2)
    return VICRegLoss(params.lambda_param, params.mu_param, params.nu_param)(z0, z1)


METHODS: dict[str, Method] = {
    "supervised": Method(NoParams, 1, _classifier, _supervised_loss, uses_labels=True),
    "simclr": Method(SimCLRParams, 2, _simclr_head, _simclr_loss),
    "vicreg": Method(VICRegParams, 2, _vicreg_head, _vicreg_loss),
}


def method_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Check a method name and its ``train.params`` mapping; return the typed params."""
    if name not in METHODS:
        raise ConfigError(f"train.method: unknown method '{name}'; choose from {sorted(METHODS)}")
    return build(METHODS[name].params_type, dict(raw), "train.params")


def params_dict(params: Any) -> dict:
    return asdict(params)
