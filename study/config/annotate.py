"""The ``annotate`` section: ground truth from pixels, by an annotator run over the records.

Off while ``annotator`` is empty (the default): the records' own objects, boxes and labels are the
ground truth. Set, the annotate stage runs after ``data``: every record's image goes through the
annotator, and the study reads the annotator's objects (``ground_truth: annotator``) or keeps the
input's own and reports how well the annotator agrees with them (``ground_truth: input``).
"""
from __future__ import annotations

from dataclasses import dataclass

from study.config.checks import check as _check

GROUND_TRUTHS = ("annotator", "input")
ANNOTATE_LABEL_RULES = ("largest", "most_frequent", "none")  # study.data.coco.LABEL_RULES


@dataclass(frozen=True)
class AnnotateConfig:
    """The annotator (``study.annotate``), its model, vocabulary and thresholds, and its Ray Data pool.

    ``weights``: the model's weights at a local path or any fsspec URI (nothing is downloaded).
    ``score``, ``nms_iou``, ``max_per_image``: what is kept of each image's detections (score at or
    above ``score``, then per-object NMS at ``nms_iou``, then the best ``max_per_image``).
    ``replicas``: model copies in the Ray Data actor pool, each with ``cpus_per_replica`` CPUs and
    ``gpus_per_replica`` GPUs (a fraction shares a GPU; 0: on CPUs).
    """

    annotator: str = ""  # a name of study.annotate.annotators.ANNOTATORS; empty: no annotate stage
    weights: str = ""
    architecture: str = ""  # the annotator's model (empty: its default, where it has one)
    vocabulary: str = "coco"  # a shipped vocabulary's name or a vocabulary file's URI
    score: float = 0.5
    nms_iou: float = 0.5
    max_per_image: int = 100
    image_size: int = 800  # a detector's resize (shorter side)
    templates: tuple[str, ...] = ("a photo of a {}.",)  # a tagger's prompts ({} is the object's name)
    max_tags: int = 5  # a tagger's most tags per image
    label_rule: str = "largest"  # each record's label from its boxes (``none``: the input's label stays)
    ground_truth: str = "annotator"
    # Tags of each record's attacked crop (embed.crop's rule), its foreground masked out: the one-model
    # SSL test's naive-Bayes predictor reads them (measure.one_model_tagger: crop_tags, its default then).
    crop_tags: bool = False
    batch_size: int = 8  # images per forward pass
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.score <= 1, "annotate.score", "must be in [0, 1]")
        _check(0 < self.nms_iou <= 1, "annotate.nms_iou", "must be in (0, 1]")
        _check(self.max_per_image >= 1, "annotate.max_per_image", "must be >= 1")
        _check(self.image_size >= 32, "annotate.image_size", "must be >= 32 pixels")
        _check(len(self.templates) >= 1 and all("{}" in t for t in self.templates), "annotate.templates",
               "must be one or more prompts, each holding {} where the object's name goes")
        _check(self.max_tags >= 1, "annotate.max_tags", "must be >= 1")
        _check(self.label_rule in ANNOTATE_LABEL_RULES, "annotate.label_rule",
               f"must be one of {', '.join(ANNOTATE_LABEL_RULES)}")
        _check(self.ground_truth in GROUND_TRUTHS, "annotate.ground_truth", f"must be one of {', '.join(GROUND_TRUTHS)}")
        _check(self.batch_size >= 1, "annotate.batch_size", "must be >= 1")
        _check(self.replicas >= 1, "annotate.replicas", "must be >= 1")
        _check(self.cpus_per_replica > 0, "annotate.cpus_per_replica", "must be > 0")
        _check(self.gpus_per_replica >= 0, "annotate.gpus_per_replica", "must be >= 0 (0: on CPUs)")
        _check(not self.annotator or bool(self.weights), "annotate.weights",
               "is required with an annotator: its model's weights at a path or URI (nothing is downloaded)")

    @property
    def on(self) -> bool:
        return bool(self.annotator)

    @property
    def replaces(self) -> bool:
        """Whether the study reads the annotator's objects (else the input's own)."""
        return self.on and self.ground_truth == "annotator"

    @property
    def writes_records(self) -> bool:
        """Whether the stage writes the records again (with the annotator's objects, or crop tags),
        which the later stages then read."""
        return self.replaces or (self.on and self.crop_tags)
