"""An SSL encoder trained elsewhere, measured as model A (``train.checkpoint``) or B
(``train.checkpoint_b``): its file, read from any fsspec URI, turned into this product's saved form.

Accepted: a file this product saved (weights and metadata), the official BYOL release
(``study.train.byol_release``: a pickle read without running anything it names), or a checkpoint
in one of the layouts of ``study.train.ssl_formats`` (DINO's, Lightning's/solo-learn's, lightly's,
a state dict of the encoder or of its backbone alone) of the encoder that ``model.backbone``,
``model.projector_dims`` and ``train.method`` describe. A checkpoint with the backbone's weights
alone has no projector: only the backbone space can be measured. Every weight
of the backbone must be there with its shape, or the import stops and says what is missing. The encoder
takes its pixels scaled by ``model.image_mean`` / ``image_std``, ImageNet's where they are empty
(torchvision's, timm's and most SSL code's); a file this product saved keeps its own.
"""
from __future__ import annotations

import argparse
import io

import torch

from study.config import ModelConfig
from study.config_load import config_to_dict
from study.errors import ConfigError, DataError
from study.train import byol_release
from study.train.methods import method_params
from study.train.models import IMAGENET_MEAN, IMAGENET_STD, build_encoder, load_model, save_model
from study.train.ssl_formats import encoder_state, reconcile_projector


def import_checkpoint(data: bytes, model_cfg: ModelConfig, method: str, params: dict, num_classes: int,
                      image_size: int, uri: str, key: str = "train.checkpoint", fmt: str = "auto") -> tuple[bytes, dict]:
    """(this product's model file, what was imported) from a checkpoint file's bytes; ``key``
    names the config key in errors, ``fmt`` the layout where it is not told from the contents."""
    if data[:2] == b"PK":  # torch's zip format, which the product's files have
        try:
            encoder, meta = load_model(data)  # a file this product saved
            return data, {"checkpoint": uri, "format": "dejavu-study", "method": meta["method"], "projector": True}
        except Exception:
            pass
    found = _byol(data, model_cfg, uri, key, fmt)
    if found is None:
        found = encoder_state(_torch_load(data, uri, key), fmt)
    if found is None:
        if fmt != "auto":
            raise DataError(f"{key}: {uri} is not a '{fmt}' checkpoint (train.checkpoint_format)")
        raise DataError(f"{key}: not a state dict (nor one under 'state_dict', 'model', 'encoder' or 'teacher')")
    fmt, state = found
    encoder = build_encoder(model_cfg, method, method_params(method, params), num_classes, image_size)
    want = encoder.state_dict()
    state = reconcile_projector(state, want)
    backbone = [k for k in want if k.startswith("backbone.")]
    missing = [k for k in backbone if k not in state]
    wrong = [k for k in backbone if k in state and state[k].shape != want[k].shape]
    if missing or wrong:
        unexpected = [k for k in state if k.startswith("backbone.") and k not in want]
        raise DataError(f"{key}: {uri} ({fmt}) does not hold a {model_cfg.backbone} backbone: "
                        f"{len(missing)} weight(s) missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                        f"(e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})")
    projector = [k for k in want if k.startswith("projector.")]
    has_projector = all(k in state and state[k].shape == want[k].shape for k in projector)
    kept = {k: v for k, v in state.items() if k in want and (has_projector or k.startswith("backbone."))}
    encoder.load_state_dict({**want, **kept})
    mean, std = list(model_cfg.image_mean or IMAGENET_MEAN), list(model_cfg.image_std or IMAGENET_STD)
    meta = {"method": method, "params": dict(params), "model": config_to_dict(model_cfg), "num_classes": num_classes,
            "image_size": image_size, "trained_on": ["elsewhere"], "checkpoint": uri, "image_mean": mean,
            "image_std": std}
    return save_model(encoder, meta), {"checkpoint": uri, "format": fmt, "method": method,
                                       "projector": has_projector, "image_mean": mean, "image_std": std}


def _byol(data: bytes, model_cfg: ModelConfig, uri: str, key: str, fmt: str) -> tuple[str, dict] | None:
    """("byol", state) of the official BYOL release; None for any other file (``fmt`` auto)."""
    if fmt not in ("auto", "byol"):
        return None
    try:
        state = byol_release.encoder_state(data) if data[:1] == b"\x80" else None  # a pickle, not torch's zip
    except byol_release.Refused as e:
        if fmt == "auto":
            return None  # some other pickle: torch.load says what it is
        raise DataError(f"{key}: {uri} names {e}, which is not read from a file (the BYOL release holds numpy arrays, "
                        "dicts and named tuples only)") from None
    if state is None:
        if fmt == "byol":
            raise DataError(f"{key}: {uri} is not the official BYOL release (a dill pickle with 'experiment_state' "
                            "holding a Haiku ResNet's parameters)")
        return None
    if model_cfg.backbone != "resnet50-haiku":
        raise ConfigError(f"{key}: {uri} is the official BYOL release (a Haiku ResNet-50): set model.backbone: "
                          f"resnet50-haiku, not {model_cfg.backbone} (its padding differs: the same weights give "
                          "other features)")
    return "byol", state


def _torch_load(data: bytes, uri: str, key: str):
    try:
        # A training script's arguments (DINO's argparse.Namespace) may sit beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        # Only tensors and plain containers load (torch.load's weights_only): no code runs from the file.
        held = "; it holds objects besides tensors (a training script's config?): save the state dict alone, " \
            "torch.save(checkpoint['state_dict'], PATH)" if "Unsupported global" in str(e) else " (save a state dict of tensors)"
        raise DataError(f"{key}: {uri} is not a PyTorch checkpoint that loads as weights only{held}") from None


def check_spaces(info: dict, explicit: tuple[str, ...]) -> None:
    """A checkpoint without projector weights measures the backbone space alone; asking for the
    projector space by name (``search.representations``) is then a mistake."""
    if not info["projector"] and "projector" in explicit:
        raise ConfigError(f"search.representations: the checkpoint {info['checkpoint']} holds no projector weights "
                          "for the configured model; set search.representations=[backbone]")
