"""An SSL encoder trained elsewhere, measured as model A (``train.checkpoint``) or B
(``train.checkpoint_b``): its file, read from any fsspec URI, turned into this product's saved form.

Accepted: a file this product saved (weights and metadata), or a PyTorch state dict (bare, or
under "state_dict" / "model" / "encoder") of the encoder that ``model.backbone``,
``model.projector_dims`` and ``train.method`` describe. Keys may carry a "module." (DDP) or
"encoder." prefix; a torchvision classifier's "fc." weights are ignored. A state dict with the
backbone's weights alone has no projector: only the backbone space can be measured. Every weight
of the backbone must be there with its shape, or the import stops and says what is missing. The encoder
takes its pixels scaled by ``model.image_mean`` / ``image_std``, ImageNet's where they are empty
(torchvision's, timm's and most SSL code's); a file this product saved keeps its own.
"""
from __future__ import annotations

import io

import torch

from study.config import ModelConfig
from study.config_load import config_to_dict
from study.errors import ConfigError, DataError
from study.train.methods import method_params
from study.train.models import IMAGENET_MEAN, IMAGENET_STD, build_encoder, load_model, save_model

PREFIXES = ("module.", "encoder.")


def _state_dict(blob, key: str) -> dict:
    for name in ("state_dict", "model", "encoder"):
        if isinstance(blob, dict) and isinstance(blob.get(name), dict):
            return blob[name]
    if isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return blob
    raise DataError(f"{key}: not a state dict (nor one under 'state_dict', 'model' or 'encoder')")


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def import_checkpoint(data: bytes, model_cfg: ModelConfig, method: str, params: dict, num_classes: int,
                      image_size: int, uri: str, key: str = "train.checkpoint") -> tuple[bytes, dict]:
    """(this product's model file, what was imported) from a checkpoint file's bytes; ``key``
    names the config key in errors."""
    try:
        encoder, meta = load_model(data)  # a file this product saved
        return data, {"checkpoint": uri, "format": "dejavu-study", "method": meta["method"], "projector": True}
    except Exception:
        pass
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        # Only tensors and plain containers load (torch.load's weights_only): no code runs from the file.
        raise DataError(f"{key}: {uri} is not a PyTorch checkpoint that loads as weights only "
                        "(save a state dict of tensors)") from None
    state = {_strip(k): v for k, v in _state_dict(blob, key).items()}
    encoder = build_encoder(model_cfg, method, method_params(method, params), num_classes)
    want = encoder.state_dict()
    if not any(k.startswith("backbone.") for k in state):  # a bare backbone's state dict
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    backbone = [k for k in want if k.startswith("backbone.")]
    missing = [k for k in backbone if k not in state]
    wrong = [k for k in backbone if k in state and state[k].shape != want[k].shape]
    if missing or wrong:
        raise DataError(f"{key}: {uri} does not hold a {model_cfg.backbone} backbone: "
                        f"{len(missing)} weight(s) missing (e.g. {missing[:2]}), {len(wrong)} of another shape "
                        f"(e.g. {wrong[:2]})")
    projector = [k for k in want if k.startswith("projector.")]
    has_projector = all(k in state and state[k].shape == want[k].shape for k in projector)
    kept = {k: v for k, v in state.items() if k in want and (has_projector or k.startswith("backbone."))}
    encoder.load_state_dict({**want, **kept})
    mean, std = list(model_cfg.image_mean or IMAGENET_MEAN), list(model_cfg.image_std or IMAGENET_STD)
    meta = {"method": method, "params": dict(params), "model": config_to_dict(model_cfg), "num_classes": num_classes,
            "image_size": image_size, "trained_on": ["elsewhere"], "checkpoint": uri, "image_mean": mean,
            "image_std": std}
    return save_model(encoder, meta), {"checkpoint": uri, "format": "state dict", "method": method,
                                       "projector": has_projector, "image_mean": mean, "image_std": std}


def check_spaces(info: dict, spaces) -> None:
    if not info["projector"] and "projector" in spaces:
        raise ConfigError(f"search.representations: the checkpoint {info['checkpoint']} holds no projector weights "
                          "for the configured model; set search.representations=[backbone]")
