"""The methods with a teacher: BYOL and DINO (losses and heads from lightly).

The teacher is a copy of the encoder that follows it by a moving average whose momentum rises from
``params.momentum`` to 1 on a cosine over training (BYOL §3.2, DINO §3.1; lightly's
``cosine_schedule``). BYOL measures its online encoder, DINO its teacher, as their papers do.
Each function has the signature ``study.train.methods.Method`` asks for.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import DINOLoss, NegativeCosineSimilarity
from lightly.models.modules.heads import DINOProjectionHead
from lightly.utils.scheduler import cosine_schedule

from study.train.learner import Learner, Step, mlp


def _parts(model) -> Learner:
    return getattr(model, "module", model)  # under DistributedDataParallel, the wrapped learner


@dataclass(frozen=True)
class BYOLParams:
    momentum: float = 0.99  # the teacher's momentum at the first step; 1 at the last
    predictor_hidden: int = 0  # the predictor's hidden size; 0: the projector's first


def byol_projector(in_dim, dims, num_classes, params):
    return mlp(in_dim, dims, last_batch_norm=False)


def byol_learner(make_encoder, dims, params) -> Learner:
    out = dims[-1]
    return Learner(make_encoder(), predictor=mlp(out, (params.predictor_hidden or dims[0], out), last_batch_norm=False),
                   teacher=make_encoder())


def byol_loss(model, views, labels, params, step: Step) -> torch.Tensor:
    # One forward over both views (shared BatchNorm statistics; one forward per step under DDP).
    _, _, p = model(torch.cat(views))
    with torch.no_grad():
        _, t = _parts(model).teacher(torch.cat(views))
    p0, p1 = p.chunk(2)
    t0, t1 = t.chunk(2)
    crit = NegativeCosineSimilarity()
    return 0.5 * (crit(p0, t1) + crit(p1, t0))


@dataclass(frozen=True)
class DINOParams:
    momentum: float = 0.996
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9


def dino_projector(in_dim, dims, num_classes, params):
    """lightly's DINO head from hidden-bottleneck-output sizes; from two (hidden-output, so that a
    sweep over methods can share one projector setting) the bottleneck is the output's size; from
    one, every size is it."""
    hidden, bottleneck, out = (dims[0], dims[-1], dims[-1]) if len(dims) < 3 else dims[:3]
    return DINOProjectionHead(in_dim, hidden, bottleneck, out)


def dino_learner(make_encoder, dims, params) -> Learner:
    criterion = DINOLoss(output_dim=dims[-1], warmup_teacher_temp=params.warmup_teacher_temp,
                         teacher_temp=params.teacher_temp, warmup_teacher_temp_epochs=params.warmup_teacher_temp_epochs,
                         student_temp=params.student_temp, center_momentum=params.center_momentum)
    return Learner(make_encoder(), teacher=make_encoder(), criterion=criterion)


def dino_loss(model, views, labels, params, step: Step) -> torch.Tensor:
    n = len(views)
    _, z, _ = model(torch.cat(views))
    with torch.no_grad():
        _, t = _parts(model).teacher(torch.cat(views))
    return _parts(model).criterion(list(t.chunk(n)), list(z.chunk(n)), epoch=step.epoch)


def follow_teacher(learner: Learner, params, step: Step) -> None:
    learner.follow(cosine_schedule(step.index, step.total, params.momentum, 1.0))
