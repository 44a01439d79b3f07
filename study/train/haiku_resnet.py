"""A ResNet-50 as Haiku builds it (``model.backbone: resnet50-haiku``), the encoder of the official
BYOL release: torchvision's ResNet-50 module for module, with TensorFlow's ``SAME`` padding.

The weights are the same shapes as torchvision's, but a strided convolution or max-pool under
``SAME`` pads only what the stride needs and puts the odd pixel at the end (a 7x7 stride-2 conv on
an even size pads 2 before and 3 after; torchvision pads 3 and 3), so the same weights give other
features under torchvision's padding. No library builds this in PyTorch, hence the two modules
below; every other part (blocks, BatchNorm, pooling) is torchvision's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def same_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) that TensorFlow's ``SAME`` adds to an input of ``size`` (H, W)."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same names) padding as ``SAME``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, same_padding(x.shape[-2:], self.kernel_size, self.stride)))


class SameMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` padding as ``SAME`` (the padding never wins the max)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(kernel_size, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_padding(x.shape[-2:], _pair(self.kernel_size), _pair(self.stride))
        return super().forward(F.pad(x, pad, value=float("-inf")))


def resnet50_haiku() -> tuple[nn.Module, int]:
    """torchvision's ResNet-50 (ImageNet stem) without its classifier, every convolution wider than
    1x1 and the max-pool padding as ``SAME`` (a 1x1 convolution needs no padding either way)."""
    net = torchvision.models.resnet50(weights=None)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size != (1, 1):
                setattr(module, name, SameConv2d(child))
    net.maxpool = SameMaxPool2d(3, 2)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim
