"""Open-vocabulary detection through Hugging Face transformers: OWL-ViT, OWLv2 and Grounding DINO.

The model is a folder as ``save_pretrained`` writes it (``config.json``, the weights, and the
processor's files: tokenizer and image processor), at a local path or any fsspec URI (copied to a
local folder first); nothing is looked up on the hub. Its ``model_type`` says which it is.

Every name and synonym of the vocabulary, in each prompt template, is a text query. For OWL-ViT
and OWLv2 a forward pass scores each proposal (a box per image patch) against every query; the
processor's own post-processing (``post_process_object_detection`` at threshold 0) gives each
proposal its best query's sigmoid score, so one class per proposal, and its box in the pixels of
the image (OWL-ViT resizes an image to a square; OWLv2 pads it to one, and its boxes are scaled to
the longer side). Grounding DINO reads the queries as phrases of one text (``_grounding``). Boxes
are clipped to the image; the query names the canonical object; then the shared thresholds
(``detections.keep``).
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from study.annotate.detections import Detections, Thresholds, keep
from study.annotate.on_device import OnDevice
from study.annotate.vocabulary import Vocabulary
from study.errors import ConfigError, DataError
from study import model_cache, storage

MODEL_TYPES = ("owlvit", "owlv2", "grounding-dino")


class TransformersDetector(OnDevice):
    """An OWL-ViT or OWLv2 model over a vocabulary (the module's docstring)."""

    boxes = True

    def __init__(self, weights: str, vocabulary: Vocabulary, thresholds: Thresholds,
                 templates: Sequence[str] = ("a photo of a {}.",)):
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # a hub lookup would hang without a network
            os.environ.setdefault(name, "1")
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bars would fill a replica's console

        if not storage.exists(weights):
            raise ConfigError(f"annotate.weights: {weights} is not a folder of a Hugging Face model "
                              "(save_pretrained's output)")
        folder = model_cache.local_path(weights, "annotate.weights")  # a remote folder: copied once per machine
        try:
            model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        except (OSError, ValueError) as e:
            raise DataError(f"annotate.weights: {weights} is not a Hugging Face model folder ({str(e).splitlines()[0]})") from None
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"annotate.weights: {weights} holds a '{model_type}' model; the transformers annotator "
                              f"runs {', '.join(MODEL_TYPES)}")
        try:
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(folder, local_files_only=True).eval()
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise DataError(f"annotate.weights: {weights} does not load as {model_type} with its processor "
                            f"({str(e).splitlines()[0]})") from None
        self.model_type, self.thresholds = model_type, thresholds
        queries = [(t.format(q), o) for t in templates for q, o in vocabulary.queries()]
        self.texts = [q for q, _ in queries]
        self.query_object = np.array([o for _, o in queries], dtype=np.int64)
        if model_type == "grounding-dino":
            self.chunks = phrase_chunks(self.processor.tokenizer, self.texts, self.model.config.max_text_len)
        self.fingerprint = hashlib.sha256(f"transformers/{model_type}/{list(templates)}/{model_cache.fingerprint(weights, 'annotate.weights')}".encode()).hexdigest()

    @classmethod
    def from_config(cls, cfg, vocabulary: Vocabulary, thresholds: Thresholds) -> "TransformersDetector":
        return cls(cfg.weights, vocabulary, thresholds, cfg.templates)

    def __call__(self, images: Sequence) -> list[Detections]:
        """Each image's (PIL) kept detections, boxes in its pixels."""
        if not images:
            return []
        images = [im.convert("RGB") for im in images]
        found = []
        for im, (boxes, scores, queries) in zip(images, PROPOSALS[self.model_type](self, images)):
            boxes = boxes.astype(np.float32)
            np.clip(boxes, 0, [im.width, im.height, im.width, im.height], out=boxes)
            found.append(keep(boxes, scores, self.query_object[queries], self.thresholds))
        return found

    def _owl(self, images: list) -> list[tuple]:
        """Per image, every proposal's (box in pixels, best query's score, that query)."""
        import torch

        inputs = self.processor(text=[self.texts] * len(images), images=images, return_tensors="pt",
                                padding=True, truncation=True)
        with torch.no_grad():
            outputs = self.model(**inputs.to(self.device))
        sizes = [(im.height, im.width) for im in images]
        results = self.processor.image_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        return [(r["boxes"].cpu().numpy(), r["scores"].cpu().numpy(), r["labels"].cpu().numpy()) for r in results]

    def _grounding(self, images: list) -> list[tuple]:
        """Grounding DINO reads the queries as one text of phrases ("cat . dog ."), in chunks that fit
        its text length; a query's score on a proposal is the highest of its tokens' sigmoid scores (as
        the model's own post-processing scores a box). Each chunk's proposals are its own (the model
        picks proposals from the text too); one class per proposal is taken within a chunk."""
        import torch

        per_image = [([], [], []) for _ in images]
        for text, spans in self.chunks:
            inputs = self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
            with torch.no_grad():
                out = self.model(**inputs.to(self.device))
            probs = torch.sigmoid(out.logits).cpu().numpy()  # (images, proposals, text tokens)
            by_query = np.stack([probs[:, :, tokens].max(axis=2) for tokens, _ in spans], axis=2)
            best = by_query.argmax(axis=2)  # the first of equal maxima
            cx, cy, w, h = np.moveaxis(out.pred_boxes.cpu().numpy(), 2, 0)
            corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=2)
            for i, im in enumerate(images):
                per_image[i][0].append(corners[i] * [im.width, im.height, im.width, im.height])
                per_image[i][1].append(np.take_along_axis(by_query[i], best[i][:, None], 1)[:, 0])
                per_image[i][2].append(np.array([spans[q][1] for q in best[i]], dtype=np.int64))
        return [tuple(np.concatenate(part) for part in parts) for parts in per_image]


PROPOSALS = {"owlvit": TransformersDetector._owl, "owlv2": TransformersDetector._owl,
             "grounding-dino": TransformersDetector._grounding}


def phrase_chunks(tokenizer, texts: list[str], limit: int) -> list[tuple[str, list[tuple[list[int], int]]]]:
    """Texts of phrases separated by " . " (each query without a trailing full stop, which would end
    the phrase early), each within ``limit`` tokens, with each query's token positions and index."""
    pieces = [t.strip().rstrip(".").strip() for t in texts]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 1 for p in pieces]  # and its " ."
    if max(lengths) + 2 > limit:
        raise ConfigError(f"annotate: the query '{pieces[int(np.argmax(lengths))]}' is longer than the model's "
                          f"{limit} text tokens")
    groups, current, used = [], [], 2  # [CLS] and [SEP]
    for q, n in enumerate(lengths):
        if current and used + n > limit:
            groups.append(current)
            current, used = [], 2
        current.append(q)
        used += n
    groups.append(current)
    chunks = []
    for group in groups:
        text, starts = "", []
        for q in group:
            starts.append(len(text))
            text += pieces[q] + " . "
        text = text.rstrip()
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        spans = []
        for q, start in zip(group, starts):
            end = start + len(pieces[q])
            spans.append(([t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end], q))
        chunks.append((text, spans))
    return chunks
