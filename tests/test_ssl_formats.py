"""SSL encoders trained elsewhere, each saved here as its source saves it: torchvision and timm
models (a ResNet, a ViT at the study's image size) built with their libraries, a lightly module
(a ResNet's children as the backbone, lightly's SimCLR head), a Lightning checkpoint laid out as
solo-learn's VICReg (Sequential projector with biases, momentum copies, an online classifier), the
official VICReg full checkpoint (DDP keys under ``model``, a last Linear without bias) and the
official DINO checkpoint (teacher and student, DINO's head written out here as its code has it,
the run's argparse arguments beside the weights). What the product embeds from each equals the
source's own modules run on the same pixels, scaled by ImageNet's mean and std with torchvision."""
from __future__ import annotations

import argparse
import io

import pytest
import torch
import torchvision
from torch import nn
from torchvision.transforms import Normalize

from study.config import ModelConfig
from study.errors import DataError
from study.train.checkpoints import import_checkpoint
from study.train.models import input_scaling, load_model

SIZE = 32
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's documented normalisation


def _pixels(n: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _direct_input() -> torch.Tensor:
    return Normalize(*IMAGENET)(_pixels().float() / 255)


def _import(blob, backbone: str, method: str = "simclr", dims=(16, 8)):
    buf = io.BytesIO()
    torch.save(blob, buf)
    cfg = ModelConfig(backbone=backbone, projector_dims=tuple(dims))
    data, info = import_checkpoint(buf.getvalue(), cfg, method, {}, 4, SIZE, "file:///x.pt")
    encoder, meta = load_model(data)
    with torch.inference_mode():
        h, z = encoder(input_scaling(meta)(_pixels()))
    return info, h, z


def _close(a, b) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _eval(*modules) -> None:
    torch.manual_seed(7)
    for m in modules:
        for bn in [x for x in m.modules() if isinstance(x, nn.BatchNorm1d | nn.BatchNorm2d)]:
            bn.running_mean.normal_(0, 0.1)  # statistics of a trained model, not the initial ones
            bn.running_var.uniform_(0.5, 2.0)
        m.eval()


def test_a_torchvision_resnet_with_its_classifier():
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    _eval(net)
    info, h, _ = _import(net.state_dict(), "resnet18-imagenet")
    assert (info["format"], info["projector"]) == ("state dict", False)
    net.fc = nn.Identity()
    with torch.inference_mode():
        _close(h, net(_direct_input()))


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_a_timm_model_by_name(name):
    import timm

    torch.manual_seed(2)
    kwargs = {"img_size": SIZE} if name.startswith("vit") else {}
    net = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    _eval(net)
    info, h, _ = _import(net.state_dict(), f"timm/{name}")
    net.reset_classifier(0)
    with torch.inference_mode():
        _close(h, net(_direct_input()))
    if name.startswith("vit"):  # a ViT of another input size: its position embedding says so
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        with pytest.raises(DataError, match=r"does not hold a timm/vit_tiny_patch16_224 backbone: 0 weight\(s\) missing"
                                            r" .* 1 of another shape \(e\.g\. \['backbone\.pos_embed'\]\)"):
            import_checkpoint(buf.getvalue(), ModelConfig(backbone=f"timm/{name}"), "simclr", {}, 4, 48, "file:///v.pt")


def test_a_lightly_module_with_its_simclr_head():
    from lightly.models.modules import SimCLRProjectionHead

    class SimCLR(nn.Module):  # as lightly's examples build it
        def __init__(self):
            super().__init__()
            resnet = torchvision.models.resnet18(weights=None)
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = SimCLRProjectionHead(512, 64, 32)

    torch.manual_seed(3)
    model = SimCLR()
    _eval(model)
    info, h, z = _import(model.state_dict(), "resnet18-imagenet", "simclr", (64, 32))
    assert (info["format"], info["projector"]) == ("lightly", True)
    with torch.inference_mode():
        features = model.backbone(_direct_input()).flatten(1)
        _close(h, features)
        _close(z, model.projection_head(features))


def _cifar_resnet18() -> nn.Module:
    """solo-learn's CIFAR ResNet-18: torchvision's, 3x3 stride-1 stem, no max-pool, no classifier."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    return net


def _vicreg_projector(dims, last_bias: bool) -> nn.Sequential:
    """VICReg's expander: Linear (with bias) + BatchNorm + ReLU per hidden layer, then a Linear."""
    layers = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("source", ["lightning", "vicreg"])
def test_a_sequential_projector_with_biases_folds_into_lightlys_head(source):
    """solo-learn's Lightning checkpoint and the official VICReg full checkpoint: the hidden
    Linear layers' biases go into the BatchNorm running means; a last Linear without bias gets a
    zero one. The projector's outputs are the source's."""
    torch.manual_seed(4)
    backbone, projector = _cifar_resnet18(), _vicreg_projector([512, 64, 64, 32], last_bias=source == "lightning")
    _eval(backbone, projector)
    state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
             **{f"projector.{k}": v for k, v in projector.state_dict().items()}}
    if source == "lightning":
        blob = {"pytorch-lightning_version": "2.4.0", "epoch": 399, "global_step": 1000,
                "state_dict": {**state, **{f"momentum_{k}": v for k, v in state.items()},
                               "classifier.weight": torch.zeros(10, 512), "classifier.bias": torch.zeros(10)},
                "hyper_parameters": {"method": "vicreg"}}
    else:
        blob = {"epoch": 1000, "model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}}}
    info, h, z = _import(blob, "resnet18", "vicreg", (64, 64, 32))
    assert (info["format"], info["projector"]) == ("lightning" if source == "lightning" else "state dict", True)
    with torch.inference_mode():
        features = backbone(_direct_input())
        _close(h, features)
        _close(z, projector(features))


class DINOHead(nn.Module):
    """DINO's head as its code writes it: an MLP (GELU), L2 normalisation, a weight-normed Linear."""

    def __init__(self, in_dim, out_dim, hidden, bottleneck):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def test_the_official_dino_checkpoint_measures_its_teacher():
    torch.manual_seed(5)
    student, teacher = {}, {}
    for out in (student, teacher):
        backbone, head = torchvision.models.resnet18(weights=None), DINOHead(512, 48, 64, 16)
        backbone.fc = nn.Identity()
        _eval(backbone, head)
        out.update({f"module.backbone.{k}": v for k, v in backbone.state_dict().items()})
        out.update({f"module.head.{k}": v for k, v in head.state_dict().items()})
        out["modules"] = (backbone, head)
    t_backbone, t_head = teacher.pop("modules")
    student.pop("modules")
    blob = {"student": student, "teacher": teacher, "epoch": 100, "optimizer": {"state": {}},
            "args": argparse.Namespace(arch="resnet50", out_dim=65536)}
    info, h, z = _import(blob, "resnet18-imagenet", "dino", (64, 16, 48))
    assert (info["format"], info["projector"]) == ("dino", True)
    with torch.inference_mode():
        features = t_backbone(_direct_input())
        _close(h, features)
        _close(z, t_head(features))


class TrainingConfig:  # a training script's own class: torch.load's weights_only refuses to build it
    pass


def test_a_checkpoint_with_objects_besides_tensors_says_how_to_save_it():
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "cfg": TrainingConfig()}, buf)
    with pytest.raises(DataError, match=r"holds objects besides tensors .* torch\.save\(checkpoint\['state_dict'\], PATH\)$"):
        import_checkpoint(buf.getvalue(), ModelConfig(), "simclr", {}, 4, SIZE, "file:///c.pt")


def test_a_lightly_backbone_without_its_head_needs_its_format_named():
    """Sequential-numbered backbone keys alone are what the product's own small_cnn has too: told
    apart by train.checkpoint_format only."""
    torch.manual_seed(6)
    resnet = torchvision.models.resnet18(weights=None)
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    _eval(backbone)
    buf = io.BytesIO()
    torch.save({f"backbone.{k}": v for k, v in backbone.state_dict().items()}, buf)
    cfg = ModelConfig(backbone="resnet18-imagenet", projector_dims=(16, 8))
    with pytest.raises(DataError, match=r"does not hold a resnet18-imagenet backbone"):
        import_checkpoint(buf.getvalue(), cfg, "simclr", {}, 4, SIZE, "file:///l.pt")
    data, info = import_checkpoint(buf.getvalue(), cfg, "simclr", {}, 4, SIZE, "file:///l.pt", fmt="lightly")
    encoder, meta = load_model(data)
    assert (info["format"], info["projector"]) == ("lightly", False)
    with torch.inference_mode():
        _close(encoder(input_scaling(meta)(_pixels()))[0], backbone(_direct_input()).flatten(1))
    with pytest.raises(DataError, match=r"is not a 'dino' checkpoint \(train\.checkpoint_format\)$"):
        import_checkpoint(buf.getvalue(), cfg, "simclr", {}, 4, SIZE, "file:///l.pt", fmt="dino")
