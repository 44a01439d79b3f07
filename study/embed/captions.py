"""What a CLIP-style model sees of each record (docs/concepts/vlm-dejavu.md), and its Ray Data replica.

Public images are embedded whole by the image tower; attacked records by their caption through
the text tower. ``plan_captions`` decides in the driver, from metadata only, which attacked
records can be tested and counts the others by reason; ``prepare_vlm_batch`` applies the same rule
(``caption_skip_reason``) inside the pipeline, so the plan and the pipeline cannot disagree. The
one-model test's text retriever embeds the public records' captions as well (mode ``CAPTION``:
every public record with a caption, objects or not, as the image tower embeds every public image).
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import pyarrow as pa
import torch

from study import storage
from study.core.split_plan import SplitPlan
from study.data import records
from study.data.model_input import ModelInput

REASON_NO_OBJECTS = "no_objects"
REASON_NO_CAPTION = "empty_caption"
IMAGE, TEXT = "image", "text"
CAPTION = "caption"  # a mode, not a view: the caption through the text tower, objects not needed
PUBLIC, PUBLIC_CAPTIONS = "public", "public_captions"  # the public records, and their captions' plan


def caption_skip_reason(caption, objects) -> str | None:
    """Why a record cannot be tested (None when it can): it needs objects and a caption."""
    if not objects:
        return REASON_NO_OBJECTS
    if not records.has_text(caption):
        return REASON_NO_CAPTION
    return None


def plan_captions(meta: pa.Table, split_of: np.ndarray, sets: tuple[str, ...]) -> dict:
    """{set: {"embedded": n, "skipped": {reason: n}}} for the attacked sets."""
    counts = {s: Counter() for s in sets}
    for s, caption, objects in zip(split_of, meta.column("caption").to_pylist(), meta.column("objects").to_pylist()):
        if s in counts:
            counts[s][caption_skip_reason(caption, objects) or "embedded"] += 1
    return {s: {"embedded": c.pop("embedded", 0), "skipped": dict(sorted(c.items()))} for s, c in counts.items()}


def plan_with_public_captions(meta: pa.Table, split_of: np.ndarray, sets: tuple[str, ...]) -> dict:
    """``plan_captions`` for the attacked sets, and with ``PUBLIC_CAPTIONS`` among ``sets`` the public
    records' captions: embedded when the caption says something, else skipped as empty."""
    out = plan_captions(meta, split_of, tuple(s for s in sets if s != PUBLIC_CAPTIONS))
    if PUBLIC_CAPTIONS in sets:
        public = split_of == PUBLIC
        said = sum(records.has_text(c) for c, p in zip(meta.column("caption").to_pylist(), public) if p)
        empty = int(public.sum()) - said
        out[PUBLIC_CAPTIONS] = {"embedded": said, "skipped": {REASON_NO_CAPTION: empty} if empty else {}}
    return out


def prepare_vlm_batch(
    batch: pa.Table, plan: SplitPlan, modes: Mapping[str, str], inputs: ModelInput
) -> dict[str, np.ndarray]:
    """Records -> {"id", "set", "pixels" (n, S, S, 3) uint8, "caption" (n,)} for wanted sets.

    Image rows carry pixels (and an empty caption), text and caption rows a caption (and zero
    pixels). Without an image mode the batch need not hold the images.
    """
    ids = batch.column("id").to_pylist()
    split_of = plan.assign(batch)
    images = batch.column("image").to_pylist() if IMAGE in modes.values() else None
    captions = batch.column("caption").to_pylist()
    objects = batch.column("objects").to_pylist()
    out_ids, out_sets, pixels, texts = [], [], [], []
    blank = np.zeros((inputs.size, inputs.size, 3), dtype=np.uint8)
    for i, rid in enumerate(ids):
        mode = modes.get(split_of[i])
        if mode is None:
            continue
        if mode in (TEXT, CAPTION):
            if mode == TEXT and caption_skip_reason(captions[i], objects[i]):
                continue
            if mode == CAPTION and not records.has_text(captions[i]):
                continue
            pixels.append(blank)
            texts.append(str(captions[i]))
        else:
            pixels.append(inputs.of_bytes(images[i]))
            texts.append("")
        out_ids.append(rid)
        out_sets.append(split_of[i])
    return {
        "id": np.asarray(out_ids, dtype=object),
        "set": np.asarray(out_sets, dtype=object),
        "pixels": inputs.stack(pixels),
        "caption": np.asarray(texts, dtype=object),
    }


class ClipEmbedder:
    """CLIP-style models, loaded once per replica: each batch's image rows go through every
    model's image tower and its caption rows through the text tower (``<model>/image``,
    ``<model>/text``; a row's other column is zeros and is not written)."""

    def __init__(self, model_uris: Mapping[str, str], threads: int):
        from study.train.clip import encode_texts, load_clip, tokenize

        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {}
        for name, uri in model_uris.items():
            model, tokenizer, _ = load_clip(storage.read_bytes(uri))
            model = model.to(self.device)
            dim = encode_texts(model, tokenize(tokenizer, ["a"]).to(self.device)).shape[1]
            self.models[name] = (model, tokenizer, dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from study.train.clip import encode_images, encode_texts, tokenize

        is_text = np.array([bool(c) for c in batch["caption"]], dtype=bool)
        out = {"id": batch["id"], "set": batch["set"]}
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][~is_text])).permute(0, 3, 1, 2)
        for name, (model, tokenizer, dim) in self.models.items():
            image_col = np.zeros((len(is_text), dim), np.float32)
            text_col = np.zeros((len(is_text), dim), np.float32)
            if (~is_text).any():
                image_col[~is_text] = encode_images(model, pixels.to(self.device)).float().cpu().numpy()
            if is_text.any():
                tokens = tokenize(tokenizer, list(batch["caption"][is_text])).to(self.device)
                text_col[is_text] = encode_texts(model, tokens).float().cpu().numpy()
            out[f"{name}/{IMAGE}"], out[f"{name}/{TEXT}"] = image_col, text_col
        return out
