"""Where records come from (``data``) and how they are split (``splits``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from study.config.checks import ADDED, SPLIT_NAMES, check as _check


DATA_SOURCES = ("synthetic", "parquet", "webdataset", "img2dataset", "coco", "voc", "hf")  # study.stages.data.SOURCES
HF_FORMATS = ("auto", "disk", "parquet", "imagefolder")  # "auto" and study.data.hf.LAYOUT_NAMES
HF_FIELDS = ("id", "image", "label", "caption", "objects", "boxes", "box_labels")  # study.data.hf.FIELDS
HF_BOX_FORMATS = ("xyxy", "xywh")  # study.data.hf.BOX_FORMATS
COCO_LABEL_RULES = ("largest", "most_frequent", "none")  # study.data.coco.LABEL_RULES
COCO_CAPTION_MODES = ("first", "each")  # study.data.coco.CAPTION_MODES
RESIZE_RULES = ("squash", "center_crop", "imagenet_center_crop", "open_clip")  # study.data.model_input.RESIZE_RULES


@dataclass(frozen=True)
class CocoConfig:
    """COCO-style annotations for ``data.source: coco`` (images under ``data.path``): the
    instances JSON (boxes, categories -> boxes, objects and a label by ``label_rule``) and/or the
    captions JSON (one record per image with its first caption, or one per caption)."""

    instances: str | None = None
    captions: str | None = None
    label_rule: str = "largest"
    caption_mode: str = "first"

    def __post_init__(self) -> None:
        _check(self.label_rule in COCO_LABEL_RULES, "data.coco.label_rule", f"must be one of {list(COCO_LABEL_RULES)}")
        _check(self.caption_mode in COCO_CAPTION_MODES, "data.coco.caption_mode",
               f"must be one of {list(COCO_CAPTION_MODES)}")


@dataclass(frozen=True)
class VocConfig:
    """ImageNet-style class folders under ``data.path`` with Pascal-VOC XML boxes under
    ``annotations`` (``<annotations>/<class>/<image stem>.xml``; optional)."""

    annotations: str | None = None


@dataclass(frozen=True)
class HfConfig:
    """A Hugging Face dataset under ``data.path``: its layout (``auto``: detected), split, the
    record fields' columns (unnamed ones guessed) and how its boxes are written."""

    format: str = "auto"
    split: str = "train"
    columns: Mapping[str, str] = field(default_factory=dict)
    box_format: str = "xyxy"

    def __post_init__(self) -> None:
        _check(self.format in HF_FORMATS, "data.hf.format", f"must be one of {list(HF_FORMATS)}")
        _check(set(self.columns) <= set(HF_FIELDS), "data.hf.columns", f"keys must be among {list(HF_FIELDS)}")
        _check(self.box_format in HF_BOX_FORMATS, "data.hf.box_format", f"must be one of {list(HF_BOX_FORMATS)}")


@dataclass(frozen=True)
class DataConfig:
    """Where records come from.

    ``synthetic`` generates scenes (the other keys below ``path`` shape them); ``parquet`` reads
    record-schema shards under ``path`` in place; ``webdataset`` and ``img2dataset`` ingest
    img2dataset's tar or Parquet output under ``path`` (local or any fsspec URI) once into record
    shards under the run, joining ``objects`` (an optional side Parquet keyed by record key with
    objects, label and boxes); ``coco`` ingests the images under ``path`` with the annotations
    named in ``coco``; ``voc`` ingests class folders under ``path`` with VOC XML boxes under
    ``voc.annotations``; ``hf`` ingests a Hugging Face dataset under ``path`` as ``hf`` says.
    ``shard_size`` is the number of records per written shard.

    ``image_size`` is the side S of every model input and ``resize`` how a record's image (or crop)
    of any size becomes one (``study.data.model_input``: ``squash`` to S x S; ``center_crop``:
    shorter side to S, then the central square; ``imagenet_center_crop``: shorter side to
    floor(S * 256 / 224), then the central S x S, the published SSL rule; ``open_clip``:
    center_crop resampled bicubically, open_clip's evaluation transform). ``size_range`` makes the synthetic generator's
    images of several sizes and aspect ratios: width and height each scaled by a factor drawn
    log-uniformly in [min, max] (``[1, 1]``: every image S x S).
    """

    source: str = "synthetic"
    path: str | None = None
    objects: str | None = None
    num_images: int = 3500
    image_size: int = 32
    resize: str = field(default="squash", metadata=ADDED)
    size_range: tuple[float, float] = field(default=(1.0, 1.0), metadata=ADDED)
    num_classes: int = 10
    objects_per_image: tuple[int, int] = (1, 1)
    object_scale: tuple[float, float] = (0.25, 0.35)
    background: str = "texture_color"
    correlation: float = 0.0
    caption_objects: int = 1
    cooccurrence: float = 0.0
    seed: int = 0
    shard_size: int = 1000
    coco: CocoConfig = field(default_factory=CocoConfig)
    voc: VocConfig = field(default_factory=VocConfig)
    hf: HfConfig = field(default_factory=HfConfig)

    def __post_init__(self) -> None:
        _check(self.source in DATA_SOURCES, "data.source", f"must be one of {list(DATA_SOURCES)}")
        _check(self.source != "coco" or bool(self.coco.instances or self.coco.captions), "data.coco",
               "needs instances or captions (a COCO JSON file's path or URI) when data.source is 'coco'")
        _check(self.source == "synthetic" or bool(self.path), "data.path",
               f"is required when data.source is '{self.source}'")
        _check(self.objects is None or self.source in ("webdataset", "img2dataset"), "data.objects",
               "is a side table for data.source 'webdataset' or 'img2dataset' (record shards carry their objects)")
        _check(self.num_images >= 10, "data.num_images", "must be at least 10")
        _check(16 <= self.image_size <= 1024, "data.image_size", "must be in [16, 1024]")
        _check(self.resize in RESIZE_RULES, "data.resize", f"must be one of {list(RESIZE_RULES)}")
        z_lo, z_hi = self.size_range
        _check(0.25 <= z_lo <= z_hi <= 4.0, "data.size_range", "must be [min, max] with 0.25 <= min <= max <= 4")
        _check(2 <= self.num_classes <= 100, "data.num_classes", "must be in [2, 100]")
        lo, hi = self.objects_per_image
        _check(1 <= lo <= hi <= 8, "data.objects_per_image", "must be [min, max] with 1 <= min <= max <= 8")
        s_lo, s_hi = self.object_scale
        _check(0.05 <= s_lo <= s_hi <= 0.9, "data.object_scale", "must be [min, max] within [0.05, 0.9]")
        _check(0.0 <= self.correlation <= 1.0, "data.correlation", "must be in [0, 1]")
        _check(hi <= self.num_classes, "data.objects_per_image", "max must not exceed data.num_classes (objects are distinct)")
        _check(0 <= self.caption_objects <= 8, "data.caption_objects", "must be in [0, 8]")
        _check(0.0 <= self.cooccurrence <= 1.0, "data.cooccurrence", "must be in [0, 1]")
        _check(self.shard_size >= 1, "data.shard_size", "must be positive")

    def input_key(self):
        """What of this config the model inputs depend on, for the stages' hashes: the size alone
        under the default rule (so runs made before the rule was configurable are reused)."""
        return self.image_size if self.resize == "squash" else (self.image_size, self.resize)


@dataclass(frozen=True)
class NearDuplicateConfig:
    """Near-duplicate images across splits by perceptual hash (``core.phash``): found when
    ``detect``, reported (count and ``examples`` pairs); with ``drop`` the attacked sets' records
    that have a near-duplicate in another split are quarantined."""

    detect: bool = False
    max_distance: int = 4
    drop: bool = False
    examples: int = 10

    def __post_init__(self) -> None:
        _check(0 <= self.max_distance <= 16, "splits.near_duplicates.max_distance", "must be in [0, 16] (bits of 64)")
        _check(not self.drop or self.detect, "splits.near_duplicates.drop", "needs detect: true")
        _check(self.examples >= 0, "splits.near_duplicates.examples", "must be >= 0")


@dataclass(frozen=True)
class SplitConfig:
    """Keyed-hash split plan: fractions of records per split (the rest stays unused), or with
    ``per_class`` a number of records of every class per split (fractions are then not used), or
    with ``assignments`` the splits the user gives (fractions are then not used).

    ``assignments``: a Parquet table (``id`` or ``key``, ``split``) or a folder of ``<split>.txt``
    files, one id per line, at a local path or any fsspec URI: the records each model trained
    elsewhere saw (``study.data.assignments``). ``min_assigned``: the fewest records a split
    listed there may keep once missing and unusable records are left out; fewer stop the study."""

    seed: int = 0
    fractions: Mapping[str, float] = field(
        default_factory=lambda: {"target": 0.14, "reference": 0.14, "public": 0.57, "holdout": 0.14, "shared": 0.0}
    )
    per_class: Mapping[str, int] = field(default_factory=dict)
    near_duplicates: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    assignments: str = field(default="", metadata=ADDED)
    min_assigned: int = field(default=1, metadata=ADDED)

    def __post_init__(self) -> None:
        _check(self.min_assigned >= 1, "splits.min_assigned", "must be >= 1")
        _check(not (self.assignments and self.per_class), "splits.per_class",
               "cannot be used with splits.assignments (the splits come from the file)")
        bad = sorted(set(self.per_class) - set(SPLIT_NAMES))
        _check(not bad, "splits.per_class", f"unknown split(s) {bad}; expected {list(SPLIT_NAMES)}")
        _check(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.per_class.values()),
               "splits.per_class", "records per class must be whole numbers >= 0")
        if self.per_class:
            for name in ("target", "reference"):  # the public set: the kinds that search it check it
                _check(self.per_class.get(name, 0) > 0, f"splits.per_class.{name}", "must be > 0")
            # Splits take their quotas in the canonical order (the attacked pair first).
            object.__setattr__(self, "per_class", {s: int(self.per_class[s]) for s in SPLIT_NAMES
                                                   if self.per_class.get(s, 0) > 0})
        unknown = sorted(set(self.fractions) - set(SPLIT_NAMES))
        _check(not unknown, "splits.fractions", f"unknown split(s) {unknown}; expected {list(SPLIT_NAMES)}")
        full = {name: float(self.fractions.get(name, 0.0)) for name in SPLIT_NAMES}
        _check(all(v >= 0 for v in full.values()), "splits.fractions", "fractions must be >= 0")
        _check(sum(full.values()) <= 1.0 + 1e-9, "splits.fractions", "fractions must sum to at most 1")
        for name in ("target", "reference"):  # the public set: the kinds that search it check it
            _check(full[name] > 0, f"splits.fractions.{name}", "must be > 0")
        object.__setattr__(self, "fractions", full)

    def uses(self, split: str) -> bool:
        """Whether the plan puts any record in ``split``. With ``assignments`` only the split
        manifest knows (``RunContext.uses``); here every split may be used."""
        if self.assignments:
            return True
        return (self.per_class.get(split, 0) if self.per_class else self.fractions.get(split, 0)) > 0
