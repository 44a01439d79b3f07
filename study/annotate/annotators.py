"""Annotators, from a registry: each loads its model from a local path or any fsspec URI (nothing is
downloaded) and turns a batch of images into each image's kept detections (``detections.keep``)
over a vocabulary, boxes in the pixels of the image it was given.

* ``torchvision``: a closed-set torchvision detector (``ARCHITECTURES``: Faster R-CNN, RetinaNet,
  FCOS) with its COCO categories, from a state dict (torchvision's own weight files are one). Its
  categories are mapped to the vocabulary's canonical names (through the synonyms); a category the
  vocabulary does not name is dropped. The detector's own post-processing (its per-category NMS)
  runs first, at a score floor no higher than the threshold; then the shared thresholds.

* ``open_clip``: image-level zero-shot tags from an open_clip model (an architecture name, the
  product's own tiny configs included, and a state dict file): every name and synonym of the
  vocabulary in each prompt template is a query (text features averaged over the templates); an
  image's query probabilities (softmax of the scaled cosine similarities, as CLIP classifies) give
  each object its best query's probability, and the ``max_tags`` most probable objects at or above
  the score threshold are its tags. Tags have no boxes. The model's preprocessing (image size,
  mean and std) and tokenizer come from its config.

* ``transformers``: open-vocabulary detection with OWL-ViT or OWLv2 through Hugging Face
  transformers (``hf_detectors``).

Each annotator has a ``fingerprint`` (a hash of its weights file, its kind and architecture), for
the annotate stage's hash.
"""
from __future__ import annotations

import hashlib
import io
from typing import Sequence

import numpy as np

from study import storage
from study.annotate.detections import Detections, Thresholds, keep
from study.annotate.hf_detectors import TransformersDetector
from study.annotate.on_device import OnDevice
from study.annotate.vocabulary import Vocabulary
from study.errors import ConfigError, DataError

ARCHITECTURES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                 "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                 "fcos_resnet50_fpn")
COCO_IDS = 91  # torchvision's COCO detectors: 91 label ids, '__background__' and 'N/A' among them


def _weights(uri: str, what: str) -> tuple[dict, str]:
    """(a state dict of tensors, the file's sha256) from any fsspec URI; weights only (no code
    runs from the file)."""
    import torch

    try:
        data = storage.read_bytes(uri)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {uri} ({e})") from None
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise DataError(f"{what}: {uri} is not a PyTorch state dict that loads as weights only") from None
    for key in ("model", "state_dict"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise DataError(f"{what}: {uri} is not a state dict (nor one under 'model' or 'state_dict')")
    return {k.removeprefix("module."): v for k, v in blob.items()}, hashlib.sha256(data).hexdigest()


def load_strict(model, state: dict, what: str, uri: str) -> None:
    """Load every weight or name, in one line, what is missing and what was not expected."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [k for k in want if k in state and state[k].shape != want[k].shape]
    if missing or unexpected or wrong:
        raise DataError(f"{what}: {uri} does not fit the model: {len(missing)} weight(s) missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another shape "
                        f"(e.g. {wrong[:2]})")
    model.load_state_dict(state)


class TorchvisionDetector(OnDevice):
    """A torchvision COCO detector over a vocabulary; ``image_size`` is its resize's shorter side."""

    boxes = True  # it finds boxes (a tagger finds image-level tags only)

    def __init__(self, weights: str, vocabulary: Vocabulary, thresholds: Thresholds,
                 architecture: str = "fasterrcnn_resnet50_fpn", image_size: int = 800):
        import torchvision.models.detection as detection

        if architecture not in ARCHITECTURES:
            raise ConfigError(f"annotate.architecture: '{architecture}' is not one of {', '.join(ARCHITECTURES)}")
        self.thresholds = thresholds
        extra = {"box_score_thresh": min(0.05, thresholds.score)} if architecture.startswith("fasterrcnn") else \
            {"score_thresh": min(0.05, thresholds.score)}
        self.model = getattr(detection, architecture)(
            weights=None, weights_backbone=None, num_classes=COCO_IDS, min_size=image_size,
            max_size=round(image_size * 1333 / 800), **extra).eval()
        state, digest = _weights(weights, "annotate.weights")
        load_strict(self.model, state, "annotate.weights", weights)
        self.fingerprint = hashlib.sha256(f"torchvision/{architecture}/{image_size}/{digest}".encode()).hexdigest()
        categories = detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
        # label id -> canonical object index; -1: a category the vocabulary does not name
        self.to_object = np.array([-1 if c in ("__background__", "N/A") or vocabulary.canonical(c) is None
                                   else vocabulary.canonical(c) for c in categories], dtype=np.int64)

    @classmethod
    def from_config(cls, cfg, vocabulary: Vocabulary, thresholds: Thresholds) -> "TorchvisionDetector":
        return cls(cfg.weights, vocabulary, thresholds, cfg.architecture or "fasterrcnn_resnet50_fpn", cfg.image_size)

    def __call__(self, images: Sequence) -> list[Detections]:
        """Each image's (PIL) kept detections, boxes in its pixels."""
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        tensors = [pil_to_tensor(im.convert("RGB")).float() / 255.0 for im in images]
        with torch.no_grad():
            outputs = self.model([t.to(self.device) for t in tensors]) if tensors else []
            outputs = [{k: v.cpu() for k, v in out.items()} for out in outputs]
        found = []
        for out in outputs:
            objects = self.to_object[out["labels"].numpy()]
            named = objects >= 0
            found.append(keep(out["boxes"].numpy()[named], out["scores"].numpy()[named], objects[named],
                              self.thresholds))
        return found


class OpenClipTagger(OnDevice):
    """Zero-shot image tags over a vocabulary with an open_clip model (the module's ``open_clip``)."""

    boxes = False
    moved = ("text",)

    def __init__(self, weights: str, vocabulary: Vocabulary, thresholds: Thresholds, architecture: str,
                 templates: Sequence[str] = ("a photo of a {}.",), max_tags: int = 5):
        import tempfile

        import open_clip
        import torch

        from study.train.clip import check_model_name

        check_model_name(architecture)  # the product's tiny configs registered; a close name suggested
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError("annotate.templates: each prompt template must hold {} where the object's name goes")
        _, digest = _weights(weights, "annotate.weights")  # a state dict, checked before open_clip reads it
        with tempfile.NamedTemporaryFile(suffix=".pt") as local:  # open_clip reads weights from a local path
            local.write(storage.read_bytes(weights))
            local.flush()
            try:
                self.model, _, self.preprocess = open_clip.create_model_and_transforms(architecture, pretrained=local.name)
            except RuntimeError as e:
                raise DataError(f"annotate.weights: {weights} does not fit open_clip's {architecture}: "
                                f"{str(e).splitlines()[0]}") from None
        self.model.eval()
        self.thresholds, self.max_tags = thresholds, max_tags
        queries = vocabulary.queries()
        self.query_object = np.array([o for _, o in queries], dtype=np.int64)
        tokenizer = open_clip.get_tokenizer(architecture)
        with torch.no_grad():
            per_template = [self.model.encode_text(tokenizer([t.format(q) for q, _ in queries])) for t in templates]
            text = torch.stack([f / f.norm(dim=-1, keepdim=True) for f in per_template]).mean(dim=0)
        self.text = text / text.norm(dim=-1, keepdim=True)
        self.fingerprint = hashlib.sha256(f"open_clip/{architecture}/{list(templates)}/{digest}".encode()).hexdigest()

    @classmethod
    def from_config(cls, cfg, vocabulary: Vocabulary, thresholds: Thresholds) -> "OpenClipTagger":
        if not cfg.architecture:
            raise ConfigError("annotate.architecture: the open_clip annotator needs its model's architecture name")
        return cls(cfg.weights, vocabulary, thresholds, cfg.architecture, cfg.templates, cfg.max_tags)

    def __call__(self, images: Sequence) -> list[Detections]:
        """Each image's (PIL) tags, most probable first (boxes: none)."""
        import torch

        if not images:
            return []
        with torch.no_grad():
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
            feats = self.model.encode_image(pixels)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            probs = (self.model.logit_scale.exp() * feats @ self.text.T).softmax(dim=-1).cpu().numpy()
        found = []
        for p in probs:
            best = np.full(int(self.query_object.max()) + 1, -1.0)
            np.maximum.at(best, self.query_object, p)  # an object's probability: its best query's
            order = np.argsort(-best, kind="stable")
            order = order[best[order] >= self.thresholds.score][: self.max_tags]
            found.append(Detections(None, best[order].astype(np.float32), order))
        return found


ANNOTATORS = {"torchvision": TorchvisionDetector, "open_clip": OpenClipTagger, "transformers": TransformersDetector}


def build(cfg, vocabulary: Vocabulary):
    """The annotator ``cfg`` (an ``AnnotateConfig``) names, over ``vocabulary``, with its thresholds."""
    if cfg.annotator not in ANNOTATORS:
        raise ConfigError(f"annotate.annotator: unknown value '{cfg.annotator}'; choose from {sorted(ANNOTATORS)}")
    return ANNOTATORS[cfg.annotator].from_config(cfg, vocabulary, Thresholds(cfg.score, cfg.nms_iou, cfg.max_per_image))
