"""The SSLMem scorer (docs/concepts/sslmem.md): a Ray Data replica that draws each record's augmented views
once and embeds the record and its views with every model it holds, so both encoders see exactly
the same views. It returns, per model and scored space, the record's alignment (a one-element
vector, so the shared embedding writer stores it like any view: ``<model>/align-<space>``).

Views are drawn from a generator keyed by the record's id and ``sslmem.seed``, never by its batch:
the scores do not depend on batching, replicas or order, and the report's gallery redraws the
very views a record was scored with.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from study import storage
from study.config import AugmentConfig
from study.core.splits import id_hash64
from study.core.sslmem import alignment
from study.embed.views import view_name  # noqa: F401  (re-exported: where the views are named)
from study.errors import ConfigError
from study.train.augment import apply_view, draw_view
from study.train.models import Encoder, load_model, normalize

REPRESENTATIONS = ("backbone", "projector")


def record_views(x: torch.Tensor, ids: Sequence[str], views: int, augment: AugmentConfig, seed: int) -> torch.Tensor:
    """(views, N, 3, H, W): each record's views from its own generator (keyed by id and seed).

    x (N, 3, H, W) normalised images."""
    keys = id_hash64(list(ids)) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    # Each record's views' parameters from its own generator (one draw of ``views`` at a time),
    # then every view of the whole batch at once: (N * views) images, record-major.
    drawn = [draw_view(views, augment, torch.Generator().manual_seed(int(key >> np.uint64(1))))  # seed < 2**63
             for key in keys]
    params = {k: torch.cat([p[k] for p in drawn]) for k in drawn[0]} if drawn else draw_view(0, augment, torch.Generator())
    x = x.cpu()
    out = apply_view(x.repeat_interleave(views, dim=0), params)
    return out.view(len(keys), views, *x.shape[1:]).transpose(0, 1).contiguous()


def check_layers(encoder: Encoder, layers: Sequence[str]) -> None:
    """Every named layer must be a module of the encoder (one line naming the choices otherwise)."""
    names = {n for n, _ in encoder.named_modules() if n}
    bad = [name for name in layers if name not in names]
    if bad:
        shown = sorted(n for n in names if n.count(".") <= 1)
        raise ConfigError(f"sslmem.layers: {bad} are not modules of this encoder; choose from {shown}")


class Representations:
    """An encoder's representations of a batch: backbone, projector and hooked intermediate
    layers (4-D outputs averaged over height and width)."""

    def __init__(self, encoder: Encoder, layers: Sequence[str]):
        check_layers(encoder, layers)
        self.encoder, self.captured = encoder, {}
        modules = dict(encoder.named_modules())
        for name in layers:
            modules[name].register_forward_hook(self._capture(name))

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            self.captured[name] = out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1)

        return hook

    def __call__(self, x: torch.Tensor, spaces: Sequence[str]) -> dict[str, np.ndarray]:
        self.captured = {}
        h, z = self.encoder(x)
        found = {"backbone": h, "projector": z, **self.captured}
        return {s: found[s].detach().float().cpu().numpy() for s in spaces}


def _rescale(meta: dict):
    """The views are drawn on images scaled as this product's models take them (``normalize``); a
    model trained elsewhere takes its own mean and std: the same view, mapped affinely to them."""
    if "image_mean" not in meta:
        return lambda t: t
    mean = torch.tensor(meta["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
    return lambda t: ((t * 0.25 + 0.5) - mean.to(t.device)) / std.to(t.device)


class AlignmentScorer:
    """Ray Data embedder of the SSLMem kind: ``model_uris`` {model: file}; ``spaces`` the scored
    representations and layers; ``views`` per record, drawn with ``augment``."""

    def __init__(self, model_uris: Mapping[str, str], threads: int, spaces: Sequence[str], views: int,
                 augment: AugmentConfig, seed: int):
        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        layers = [s for s in spaces if s not in REPRESENTATIONS]
        self.models = {}
        for name, uri in model_uris.items():
            encoder, meta = load_model(storage.read_bytes(uri))
            self.models[name] = (Representations(encoder.to(self.device), layers), _rescale(meta))
        self.spaces, self.views, self.augment, self.seed = list(spaces), views, augment, seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = normalize(torch.from_numpy(np.ascontiguousarray(batch["pixels"])).permute(0, 3, 1, 2))
        out = {"id": batch["id"], "set": batch["set"]}
        if not len(x):
            return out
        views = record_views(x, batch["id"], self.views, self.augment, self.seed).to(self.device)
        x = x.to(self.device)
        with torch.inference_mode():
            for name, (reps, rescale) in self.models.items():
                own = reps(rescale(x), self.spaces)
                seen = [reps(rescale(v), self.spaces) for v in views]  # the same views for every model
                for s in self.spaces:
                    align = alignment(own[s], np.stack([r[s] for r in seen]))
                    out[f"{name}/{view_name(s)}"] = align.astype(np.float32)[:, None]
        return out
