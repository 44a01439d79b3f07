"""What one training step updates, and the projector shapes the methods share.

A ``Learner`` holds the encoder that is measured afterwards plus a method's extra parts: a
predictor on the projector's output (BYOL), a teacher that follows the encoder by a moving
average and is never touched by the optimiser (BYOL, DINO), a loss with state (DINO's centre).
Checkpoints save the whole learner, so a resumed run continues the teacher and the centre too.
Plain PyTorch, no Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from lightly.models.modules.heads import ProjectionHead
from lightly.models.utils import update_momentum
from torch import nn



@dataclass(frozen=True)
class Step:
    """Where training stands when a loss or a moving average needs it: the epoch (from 0) and the
    optimiser step (from 0) out of ``total`` steps."""

    epoch: int
    index: int
    total: int

    @property
    def progress(self) -> float:
        return min(1.0, self.index / max(1, self.total))


def mlp(in_dim: int, dims: Sequence[int], last_batch_norm: bool) -> ProjectionHead:
    """A projector from its sizes (``8192-8192-8192`` in the papers: every hidden layer, then the
    output): Linear + BatchNorm + ReLU per hidden layer, then a Linear (with BatchNorm for SimCLR).
    For one hidden size repeated this is lightly's SimCLR/VICReg/Barlow Twins/BYOL head, layer for
    layer; lightly's heads take one hidden size only, hence the blocks here."""
    blocks, prev = [], in_dim
    for d in dims[:-1]:
        blocks.append((prev, d, nn.BatchNorm1d(d), nn.ReLU()))
        prev = d
    blocks.append((prev, dims[-1], nn.BatchNorm1d(dims[-1]) if last_batch_norm else None, None))
    return ProjectionHead(blocks)


class Learner(nn.Module):
    """``forward(x)`` -> (h, z, p): backbone features, projector output, the predictor's output on
    z (None without a predictor). The teacher and the criterion are reached as attributes."""

    # ``encoder`` and ``teacher`` are ``models.Encoder``s (backbone, projector); not imported here, as
    # models builds its projectors with the methods, which are built on this module.
    def __init__(self, encoder: nn.Module, predictor: nn.Module | None = None, teacher: nn.Module | None = None,
                 criterion: nn.Module | None = None):
        super().__init__()
        self.encoder, self.predictor, self.criterion = encoder, predictor, criterion
        self.teacher = teacher  # a second encoder of the same shape, started from the encoder's weights
        if teacher is not None:
            # Not a deepcopy: lightly's DINO head uses weight_norm, whose weights cannot be deep-copied.
            teacher.load_state_dict(encoder.state_dict())
            for p in teacher.parameters():
                p.requires_grad = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        h, z = self.encoder(x)
        return h, z, (self.predictor(z) if self.predictor is not None else None)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def follow(self, momentum: float) -> None:
        """Teacher weights <- momentum * teacher + (1 - momentum) * encoder (lightly's update; the
        teacher's BatchNorm statistics are its own, from its forward passes)."""
        update_momentum(self.encoder, self.teacher, momentum)
