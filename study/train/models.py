"""Encoders: a backbone from ``BACKBONES`` plus a method's projector, and their saved form.

Plain PyTorch, no Ray: the same classes train in Ray workers and embed under Ray Data.
"""
from __future__ import annotations

import io
from typing import Callable

import torch
import torchvision
from torch import nn

from study.config import ModelConfig
from study.train.haiku_resnet import resnet50_haiku


def small_cnn() -> tuple[nn.Module, int]:
    """CPU-sized CNN: 4x4 stride-4 stem, a 3x3 and a stride-2 3x3 conv (64/128/256), global pool."""

    def block(cin, cout, k, s, p):
        return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    net = nn.Sequential(
        *block(3, 64, 4, 4, 0),
        *block(64, 128, 3, 1, 1),
        *block(128, 256, 3, 2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return net, 256


def _resnet(name: str, small_images: bool) -> Callable[[], tuple[nn.Module, int]]:
    """A torchvision ResNet, from scratch, without its classifier. ``small_images``: a 3x3
    stride-1 stem and no max-pool (32-64 px images, as the CIFAR-sized SSL recipes do);
    otherwise torchvision's ImageNet stem (7x7 stride 2, max-pool) for 224 px images."""

    def build() -> tuple[nn.Module, int]:
        net = getattr(torchvision.models, name)(weights=None)
        if small_images:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim

    return build


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "small_cnn": small_cnn,
    "resnet18": _resnet("resnet18", small_images=True),
    "resnet50": _resnet("resnet50", small_images=True),
    "resnet18-imagenet": _resnet("resnet18", small_images=False),
    "resnet50-imagenet": _resnet("resnet50", small_images=False),
    "resnet50-haiku": resnet50_haiku,  # the official BYOL release's encoder: TensorFlow's SAME padding
}


def timm_backbone(name: str, image_size: int | None) -> tuple[nn.Module, int]:
    """A timm model (``model.backbone: timm/<name>``), from scratch, without its classifier; a model
    with a fixed input size (a ViT) is built at ``image_size``, so its position embedding is the
    one a checkpoint of that size holds."""
    import timm

    if name not in timm.list_models():
        raise KeyError(f"timm/{name}")
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, **({"img_size": image_size} if image_size else {}))
    except TypeError:  # a model without an input size of its own (a CNN) takes no img_size
        net = timm.create_model(name, pretrained=False, num_classes=0)
    return net, int(net.num_features)


def is_backbone(name: str) -> bool:
    """Whether ``model.backbone`` names a backbone: one of ``BACKBONES`` or ``timm/<a timm model>``."""
    if name in BACKBONES:
        return True
    if name.startswith("timm/"):
        import timm

        return name[len("timm/"):] in timm.list_models()
    return False


class Encoder(nn.Module):
    """backbone -> h (N, dim_h); projector(h) -> z (N, dim_z). Both are embedding representations."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.projector(h)


def build_encoder(model_cfg: ModelConfig, method_name: str, params, num_classes: int,
                  image_size: int | None = None) -> Encoder:
    from study.train.methods import METHODS  # methods build projectors from this module's parts

    if model_cfg.backbone.startswith("timm/"):
        backbone, dim = timm_backbone(model_cfg.backbone[len("timm/"):], image_size)
    elif model_cfg.backbone in BACKBONES:
        backbone, dim = BACKBONES[model_cfg.backbone]()
    else:
        raise KeyError(model_cfg.backbone)
    projector = METHODS[method_name].build_projector(dim, model_cfg.projector_dims, num_classes, params)
    return Encoder(backbone, projector)


PRODUCT_MEAN, PRODUCT_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # what models this product trains take
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's, timm's, most SSL code's


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float in roughly [-2, 2]; the input scaling of the models this product trains."""
    return (images_uint8.float() / 255.0 - 0.5) / 0.25


def input_scaling(meta: dict):
    """The function from (N, 3, H, W) uint8 to a saved model's input: its metadata's mean and std
    (a model trained elsewhere), else this product's ``normalize``."""
    if "image_mean" not in meta:
        return normalize
    mean = torch.tensor(meta["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
    return lambda images: (images.float() / 255.0 - mean.to(images.device)) / std.to(images.device)


def save_model(encoder: Encoder, meta: dict) -> bytes:
    """Serialise weights and the metadata needed to rebuild the encoder elsewhere."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, buf)
    return buf.getvalue()


def load_model(data: bytes) -> tuple[Encoder, dict]:
    from study.config_load import build
    from study.train.methods import method_params

    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # a user's file too: no code runs
    meta = blob["meta"]
    params = method_params(meta["method"], meta["params"])
    encoder = build_encoder(build(ModelConfig, meta["model"], "model"), meta["method"], params, meta["num_classes"],
                            meta.get("image_size"))
    encoder.load_state_dict(blob["state_dict"])
    return encoder.eval(), meta
