"""CLIP-style image–text models in plain PyTorch, built on open_clip (models, tokenizer, loss).

Models are always built from scratch (``pretrained=None``; nothing is downloaded): the product's
own tiny CPU configs (``clip_configs/*.json``, registered with open_clip on first use) or any
standard open_clip name (``ViT-B-32``, ``RN50``) for GPU clusters. Knows nothing of Ray: the Ray
Train recipe (``study.train.recipes.clip_fit``) and the Ray Data replica call these functions.
"""
from __future__ import annotations

import contextlib

import difflib
import glob
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from study.errors import ConfigError
from study.train.models import PRODUCT_MEAN, PRODUCT_STD, normalize

# open_clip imports Hugging Face libraries; a hub lookup without network hangs or fails.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "clip_configs")
_registered = False


@dataclass(frozen=True)
class ClipParams:
    """``train.params`` of the clip method: the contrastive temperature's start and whether it is learnt."""

    init_temperature: float = 0.07
    learn_temperature: bool = True


def clip_params(raw: Mapping[str, Any]) -> ClipParams:
    from study.config_load import build

    params = build(ClipParams, dict(raw), "train.params")
    if params.init_temperature <= 0:
        raise ConfigError("train.params.init_temperature: must be > 0")
    return params


def register_model_configs() -> None:
    """Register the product's model configs with open_clip (once per process)."""
    global _registered
    if not _registered:
        import open_clip

        for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.json"))):
            open_clip.add_model_config(path)
        _registered = True


def registered_name(model_cfg: dict) -> str:
    """A name for a folder's architecture, registered with open_clip (its public add_model_config
    reads configs from files), so that the model and its tokenizer build as a named model's do."""
    import open_clip

    text = json.dumps(model_cfg, sort_keys=True)
    name = "imported-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    if name not in open_clip.list_models():
        from study.model_cache import cache_root

        folder = os.path.join(cache_root(), "open_clip_configs")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}.json")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        open_clip.add_model_config(path)
    return name


def check_model_name(name: str) -> None:
    import open_clip

    register_model_configs()
    names = open_clip.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise ConfigError(f"model.clip: unknown open_clip model '{name}'" + (f"; did you mean {close}?" if close else ""))


class _NoPretrainedWarning:
    """While a model is built: drops open_clip's narration of it (information lines) and its
    warning that no pretrained weights were loaded (from scratch is the point here). open_clip
    logs them on the root logger, so the filter sits there, only for that while."""

    def filter(self, record) -> bool:
        return record.levelno >= logging.WARNING and "pretrained weights" not in str(record.msg)


@contextlib.contextmanager
def _without_pretrained_warning():
    root, drop = logging.getLogger(), _NoPretrainedWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def set_input_scaling(model, mean, std) -> None:
    """The per-channel mean and std the model's image tower takes its pixels in, kept where
    open_clip keeps a model's preprocessing (``model.visual.preprocess_cfg``)."""
    from open_clip.model import set_model_preprocess_cfg

    set_model_preprocess_cfg(model, {**model.visual.preprocess_cfg, "mean": tuple(mean), "std": tuple(std)})


def model_pixels(model, images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> the float input the model's image tower was trained on."""
    mean = torch.tensor(model.visual.image_mean, device=images_uint8.device).view(1, -1, 1, 1)
    std = torch.tensor(model.visual.image_std, device=images_uint8.device).view(1, -1, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def build_clip(name: str, image_size: int, params: ClipParams = ClipParams()):
    """(model, tokenizer) for an open_clip model name, randomly initialised at ``image_size``,
    taking its pixels scaled as this product trains (``normalize``)."""
    import open_clip

    check_model_name(name)
    with _without_pretrained_warning():
        model = open_clip.create_model(name, pretrained=None, force_image_size=image_size)
        tokenizer = open_clip.get_tokenizer(name)
    set_input_scaling(model, PRODUCT_MEAN, PRODUCT_STD)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1.0 / params.init_temperature))
    model.logit_scale.requires_grad_(params.learn_temperature)
    return model, tokenizer


def tokenize(tokenizer, captions: Sequence[str]) -> torch.Tensor:
    """(n, context_length) int64 token ids: start-of-text, words, end-of-text, zero padding."""
    return tokenizer(list(captions)).long()


def maskable_positions(tokens: torch.Tensor, tokenizer) -> torch.Tensor:
    """(n, L) bool: word tokens, i.e. not start-of-text, end-of-text or padding."""
    special = torch.tensor([0, tokenizer.sot_token_id, tokenizer.eot_token_id])
    return ~torch.isin(tokens, special)


def mask_token_id(tokenizer) -> int:
    """The token that text randomization writes: the word "mask" (no synthetic caption uses it).

    It must rank below end-of-text, since open_clip's text tower pools at the largest token id.
    """
    token = tokenizer.encode("mask")[0]
    assert token < tokenizer.eot_token_id
    return token


def make_loss(rank: int, world: int) -> nn.Module:
    """open_clip's contrastive loss; it gathers features across workers only when world > 1."""
    from open_clip import ClipLoss

    return ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def clip_epoch(model, loss_fn, batches, optimizer, scheduler) -> dict:
    """One pass over this worker's batches of pairs (images (B, 3, H, W) uint8, tokens (B, L)
    already randomized for this epoch): from memory (``loop.memory_batches``, which drops the
    ragged last batch) or streamed from a Ray Data shard.

    Returns the epoch's mean loss, wall time, learning rate and contrastive temperature.
    """
    model.train()
    device = next(model.parameters()).device
    start = time.perf_counter()
    total, steps = 0.0, 0
    for images, tokens in batches:
        image_f, text_f, scale = model(normalize(images.to(device)), tokens.to(device))[:3]
        loss = loss_fn(image_f, text_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # as open_clip's trainer: the temperature never goes below 1/100
            _unwrap(model).logit_scale.clamp_(0, math.log(100))
        total += float(loss.detach())
        steps += 1
    temperature = float(1.0 / _unwrap(model).logit_scale.detach().exp())
    return {"loss": total / max(1, steps), "seconds": time.perf_counter() - start, "lr": scheduler.get_last_lr()[0],
            "temperature": temperature}


@torch.inference_mode()
def encode_images(model, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, D) L2-normalised image embeddings."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model.encode_image(model_pixels(model, images[i : i + batch_size].to(device)), normalize=True)
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.text_projection.shape[-1])


@torch.inference_mode()
def encode_texts(model, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(n, L) token ids -> (n, D) L2-normalised text embeddings."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model.encode_text(tokens[i : i + batch_size].to(device), normalize=True) for i in range(0, len(tokens), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.text_projection.shape[-1])


def zero_shot_accuracy(model, tokenizer, images, labels, class_names: Sequence[str], template: str = "{}") -> float:
    """Accuracy of classifying each image by its most similar class prompt (template.format(name)).

    ``labels``: (n,) class indices, or (n, C) bool where any True class counts as right
    (images holding several objects).
    """
    prompts = encode_texts(model, tokenize(tokenizer, [template.format(n) for n in class_names]))
    pred = (encode_images(model, images) @ prompts.T).argmax(dim=1).cpu()
    labels = torch.as_tensor(labels)
    if labels.ndim == 2:
        return float(labels[torch.arange(len(pred)), pred].float().mean())
    return float((pred == labels).float().mean())


def retrieval_recall(model, images, tokens, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Image -> text recall@k on held-out pairs (pair i's caption is image i's right answer)."""
    sims = encode_images(model, images) @ encode_texts(model, tokens).T
    right = sims.diagonal()[:, None]
    rank = (sims > right).sum(dim=1)  # captions scored above the right one
    return {k: float((rank < k).float().mean()) for k in ks}


def save_clip(model: nn.Module, meta: dict) -> bytes:
    """Weights and the metadata needed to rebuild the model elsewhere (name, image size)."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, buf)
    return buf.getvalue()


def load_clip(data: bytes):
    """(model in eval mode, tokenizer, meta) from ``save_clip``'s bytes. An imported model's
    metadata holds its architecture's config (a folder's) and its input's mean and std."""
    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # a user's file too: no code runs
    meta = blob["meta"]
    if "model_cfg" in meta:
        registered_name(meta["model_cfg"])
    model, tokenizer = build_clip(meta["clip"], meta["image_size"])
    model.load_state_dict(blob["state_dict"])
    if "image_mean" in meta:
        set_input_scaling(model, meta["image_mean"], meta["image_std"])
    return model.eval(), tokenizer, meta
