"""SSL encoders trained elsewhere: what each source's checkpoint looks like, mapped onto this
product's encoder (``backbone.<the backbone's own names>``, ``projector.layers.N`` and DINO's
``projector.last_layer``: lightly's heads, which ``study.train.learner.mlp`` builds).

Sources, told apart by the checkpoint's layout (the first that fits names the format):

- ``dino``: the official DINO training checkpoint, ``teacher`` and ``student`` (``module.`` keys
  under DDP); the teacher is the model DINO evaluates: ``backbone.*`` and its head
  (``head.mlp.N``, ``head.last_layer``, weight-normed as lightly's DINO head);
- ``lightning``: a PyTorch Lightning checkpoint (solo-learn's ``.ckpt``): ``state_dict`` with
  ``backbone.*`` and the projector as a Sequential (``projector.N``); the momentum copies, the
  online classifier and the predictor are left out;
- ``lightly``: a module saved as lightly's examples build it, ``backbone`` a Sequential of a
  torchvision ResNet's children (``backbone.0`` = conv1, …, ``backbone.7`` = layer4) and
  ``projection_head.layers.N``;
- ``state dict``: the encoder's own names (``backbone.*``, ``projector.*``), or under
  ``state_dict`` / ``model`` / ``encoder`` (the official VICReg full checkpoint: ``model``, with a
  Sequential projector), or a backbone's alone (torchvision's, timm's, the official VICReg and
  DINO ResNet-50 releases; a classifier's ``fc.`` / ``head.`` weights ignored).

Everywhere ``module.`` (DDP) and ``encoder.`` prefixes are stripped. A projector's Linear layers
are reconciled with lightly's: a Linear followed by BatchNorm has no bias there (its bias, if the
checkpoint has one, is folded into the BatchNorm's running mean, which gives the same outputs in
evaluation), and a Linear the checkpoint saved without a bias gets a zero one.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
PREFIXES = ("module.", "encoder.")
DROPPED = ("momentum_", "classifier.", "predictor.", "prototypes.", "fc.", "head.")


def _strip(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _tensors(blob) -> bool:
    return isinstance(blob, dict) and bool(blob) and all(isinstance(v, torch.Tensor) for v in blob.values())


def _dino(blob: dict) -> dict:
    out = {}
    for key, value in _strip(blob["teacher"]).items():
        if key.startswith("head.mlp."):
            key = "projector.layers." + key[len("head.mlp."):]
        elif key.startswith("head.last_layer."):
            key = "projector.last_layer." + key[len("head.last_layer."):]
        out[key] = value
    return out


def _sequential_projector(state: dict) -> dict:
    return {re.sub(r"^projector\.(\d+)\.", r"projector.layers.\1.", k): v for k, v in state.items()}


def _lightly(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        m = re.match(r"^backbone\.(\d+)\.(.*)$", key)
        if m and int(m.group(1)) < len(RESNET_CHILDREN):
            key = f"backbone.{RESNET_CHILDREN[int(m.group(1))]}.{m.group(2)}"
        elif key.startswith("projection_head."):
            key = "projector." + key[len("projection_head."):]
        out[key] = value
    return out


def _under(blob) -> dict | None:
    for name in ("state_dict", "model", "encoder"):
        if isinstance(blob, dict) and _tensors(blob.get(name)):
            return blob[name]
    return blob if _tensors(blob) else None


# (name, detect(blob), state in the encoder's names)
FORMATS: list[tuple[str, Callable[[dict], bool], Callable[[dict], dict]]] = [
    ("dino", lambda b: isinstance(b, dict) and _tensors(b.get("teacher")), _dino),
    ("lightning", lambda b: isinstance(b, dict) and "pytorch-lightning_version" in b and _tensors(b.get("state_dict")),
     lambda b: _sequential_projector(_strip(b["state_dict"]))),
    # A lightly backbone saved without its head is told from the product's own small_cnn (a
    # Sequential too) by train.checkpoint_format only.
    ("lightly", lambda b: _under(b) is not None and any(re.match(r"^(module\.)?backbone\.\d+\.", k) for k in _under(b))
     and any(k.startswith("projection_head.") or k.startswith("module.projection_head.") for k in _under(b)),
     lambda b: _lightly(_strip(_under(b)))),
    ("state dict", lambda b: _under(b) is not None, lambda b: _sequential_projector(_strip(_under(b)))),
]


def encoder_state(blob, forced: str = "auto") -> tuple[str, dict] | None:
    """(format, state dict in the encoder's names) of a loaded checkpoint, or None when it is none
    of the formats. A backbone's weights alone come back with the ``backbone.`` prefix. ``forced``
    names the format where telling it from the contents is ambiguous (``train.checkpoint_format``)."""
    for name, detect, state_of in FORMATS:
        if name != forced if forced != "auto" else not detect(blob):
            continue
        try:
            state = state_of(blob)
        except (KeyError, TypeError, AttributeError):  # a named format the file is not in
            return None
        if not any(k.startswith("backbone.") for k in state):  # a bare backbone
            state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith(DROPPED)}
        return name, {k: v for k, v in state.items() if not k.startswith(DROPPED)}
    return None


def reconcile_projector(state: dict, want: dict) -> dict:
    """The projector's Linear biases as the encoder has them (above); other keys unchanged."""
    out = dict(state)
    for key in [k for k in state if k.startswith("projector.layers.") and k.endswith(".bias")]:
        if key in want:
            continue
        layer = int(key.split(".")[2])
        bn = f"projector.layers.{layer + 1}.running_mean"
        if f"projector.layers.{layer}.weight" in want and bn in want and bn in out:
            out[bn] = out[bn] - out.pop(key)  # BN(Wx + b) in evaluation = BN with running mean - b of Wx
    for key in [k for k in want if k.startswith("projector.layers.") and k.endswith(".bias")]:
        weight = key[: -len("bias")] + "weight"
        if key not in out and weight in out and out[weight].ndim == 2:
            out[key] = torch.zeros_like(want[key])  # a Linear saved without a bias
    for key in [k for k in want if k.endswith("num_batches_tracked")]:
        if key not in out and key.replace("num_batches_tracked", "running_mean") in out:
            out[key] = want[key]
    return out
