"""CLIP-style models trained elsewhere (open_clip), imported as model A or B of a VLM study.

Formats, told apart by what the file or folder holds:

- ``open_clip_train``: the training script's ``epoch_N.pt``, a dict with ``state_dict`` (keys with
  ``module.`` when it trained under DDP), ``epoch``, ``name`` (the run's name) and the optimiser's
  state. The architecture is ``model.clip``; the checkpoint does not record it.
- ``open_clip folder``: a Hugging Face Hub-style folder, ``open_clip_config.json`` (``model_cfg``
  and ``preprocess_cfg``) beside ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``.
- ``state dict``: weights alone (a ``.safetensors`` file, or a PyTorch file of tensors) of
  ``model.clip``'s architecture, as ``open_clip.create_model(name, pretrained=PATH)`` takes them.
- ``dejavu-study``: a model file this product saved.

The model's own preprocessing is kept: its config's mean and std (``model.image_mean/std`` where
the user gives them) and its image size, which must be ``data.image_size`` (the records are cut to
that size before any model sees them). Weights saved in fp16 or bf16 load into the model's fp32.
Everything becomes this product's saved form (``save_clip``) with the architecture's config in its
metadata, so the later stages load it as they load a model the product trained.
"""
from __future__ import annotations

import json
import os

import torch

from study.errors import ConfigError, DataError
from study.train import clip as clip_lib

FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                  "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin")


def _tensors(path: str, key: str, uri: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception:
            raise DataError(f"{key}: {uri} is not a safetensors file") from None
    try:
        # Only tensors and plain containers load (weights_only): no code runs from the file.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise DataError(f"{key}: {uri} is not a PyTorch checkpoint that loads as weights only") from None


def _from_folder(path: str, key: str, uri: str):
    """(format, state dict, model_cfg, preprocess_cfg) of a folder with open_clip_config.json."""
    config = os.path.join(path, "open_clip_config.json")
    if not os.path.isfile(config):
        raise DataError(f"{key}: the folder {uri} has no open_clip_config.json (a Hugging Face Hub-style open_clip "
                        "folder holds it beside its weights)")
    with open(config) as fh:
        blob = json.load(fh)
    if "model_cfg" not in blob:
        raise DataError(f"{key}: {uri}/open_clip_config.json has no model_cfg")
    weights = next((os.path.join(path, w) for w in FOLDER_WEIGHTS if os.path.isfile(os.path.join(path, w))), None)
    if weights is None:
        raise DataError(f"{key}: the folder {uri} has no weights file (one of {', '.join(FOLDER_WEIGHTS[:3])})")
    return "open_clip folder", _tensors(weights, key, uri), blob["model_cfg"], blob.get("preprocess_cfg", {})


def _from_file(path: str, key: str, uri: str):
    """(format, state dict or the product's saved blob, None, {}) of a weights file."""
    blob = _tensors(path, key, uri) if path.endswith(".safetensors") else None
    if blob is None:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)  # metadata of plain types; no code runs
            product = isinstance(blob, dict) and isinstance(blob.get("meta"), dict) and "clip" in blob["meta"]
        except Exception:
            product = False
        if product:
            return "dejavu-study", blob, None, {}
        blob = _tensors(path, key, uri)
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        return "open_clip_train", blob["state_dict"], None, {}
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return "state dict", blob, None, {}
    raise DataError(f"{key}: {uri} holds neither open_clip weights (a state dict) nor an open_clip_train checkpoint "
                    "(a dict with 'state_dict')")


def _image_size(model_cfg: dict) -> int:
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _load(model, state: dict, key: str, uri: str, what: str) -> None:
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(want[k].shape)} here" for k in want
             if k in state and state[k].shape != want[k].shape]
    if missing or unexpected or wrong:
        hint = "; a position embedding of another shape: set data.image_size to the size it was trained at" \
            if any("positional_embedding" in w for w in wrong) else ""
        parts = [f"{len(missing)} weight(s) missing (e.g. {', '.join(missing[:2])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
        raise DataError(f"{key}: {uri} does not fit {what}: {', '.join(p for p in parts if p)}{hint}")
    model.load_state_dict(state)  # fp16/bf16 tensors are copied into the fp32 parameters


def import_clip(path: str, key: str, uri: str, model_clip: str, image_size: int, mean: tuple, std: tuple,
                expected: str = "auto") -> tuple[bytes, dict]:
    """(this product's model file, what was imported) from a local copy of a CLIP checkpoint;
    ``expected`` (``train.checkpoint_format``) is the format the user says it is, or auto."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    if os.path.isdir(path):
        fmt, state, model_cfg, preprocess = _from_folder(path, key, uri)
    else:
        fmt, state, model_cfg, preprocess = _from_file(path, key, uri)
    if expected not in ("auto", fmt):
        raise DataError(f"{key}: {uri} is a '{fmt}' checkpoint, not '{expected}' (train.checkpoint_format)")
    if fmt == "dejavu-study":
        meta = state["meta"]
        if meta["image_size"] != image_size:
            raise ConfigError(f"data.image_size: {image_size}, but the model in {key} ({uri}) takes "
                              f"{meta['image_size']}-pixel images; set data.image_size={meta['image_size']}")
        with open(path, "rb") as fh:
            return fh.read(), {"checkpoint": uri, "format": fmt, "clip": meta["clip"]}
    if model_cfg is not None:
        name, size = clip_lib.registered_name(model_cfg), _image_size(model_cfg)
        if size != image_size:
            raise ConfigError(f"data.image_size: {image_size}, but the model in {key} ({uri}) takes {size}-pixel "
                              f"images; set data.image_size={size}")
    else:
        clip_lib.check_model_name(model_clip)
        name, size = model_clip, image_size
    dtype = str(next(iter(state.values())).dtype).replace("torch.", "") if state else "float32"
    mean = tuple(mean) or tuple(preprocess.get("mean") or OPENAI_DATASET_MEAN)
    std = tuple(std) or tuple(preprocess.get("std") or OPENAI_DATASET_STD)
    model, _ = clip_lib.build_clip(name, size)
    clip_lib.set_input_scaling(model, mean, std)
    _load(model, state, key, uri, f"open_clip's {model_clip if model_cfg is None else 'config in open_clip_config.json'}"
                                  f" at {size} pixels")
    meta = {"clip": name, "image_size": size, "image_mean": list(mean), "image_std": list(std),
            "trained_on": ["elsewhere"], "checkpoint": uri, "format": fmt}
    if model_cfg is not None:
        meta["model_cfg"] = model_cfg
    return clip_lib.save_clip(model, meta), {"checkpoint": uri, "format": fmt, "clip": model_clip if model_cfg is None
                                             else "open_clip_config.json", "saved_as": dtype,
                                             "image_mean": list(mean), "image_std": list(std)}
