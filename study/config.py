"""Typed, frozen study configuration: one dataclass per concern, resolved once per run.

Each stage takes the narrowest section it needs. Values are checked in ``__post_init__`` so a bad
value fails at load time with the key's dotted path in the message (see ``study.config_load``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from study.errors import ConfigError

SPLIT_NAMES = ("target", "reference", "public", "holdout", "shared")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


DATA_SOURCES = ("synthetic", "parquet", "webdataset", "img2dataset", "coco", "voc", "hf")  # study.pipeline.ingest.SOURCES
HF_FORMATS = ("auto", "disk", "parquet", "imagefolder")  # "auto" and study.data.hf.LAYOUT_NAMES
HF_FIELDS = ("id", "image", "label", "caption", "objects", "boxes", "box_labels")  # study.data.hf.FIELDS
HF_BOX_FORMATS = ("xyxy", "xywh")  # study.data.hf.BOX_FORMATS
COCO_LABEL_RULES = ("largest", "most_frequent", "none")  # study.data.coco.LABEL_RULES
COCO_CAPTION_MODES = ("first", "each")  # study.data.coco.CAPTION_MODES


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
    """

    source: str = "synthetic"
    path: str | None = None
    objects: str | None = None
    num_images: int = 3500
    image_size: int = 32
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
    ``per_class`` a number of records of every class per split (fractions are then not used)."""

    seed: int = 0
    fractions: Mapping[str, float] = field(
        default_factory=lambda: {"target": 0.14, "reference": 0.14, "public": 0.57, "holdout": 0.14, "shared": 0.0}
    )
    per_class: Mapping[str, int] = field(default_factory=dict)
    near_duplicates: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)

    def __post_init__(self) -> None:
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
        """Whether the plan puts any record in ``split``."""
        return (self.per_class.get(split, 0) if self.per_class else self.fractions.get(split, 0)) > 0


@dataclass(frozen=True)
class ModelConfig:
    """SSL: backbone and projector (for the supervised method the projector is the classifier head).
    VLM: ``clip``, an open_clip model name (the product's own tiny CPU configs or a standard one
    such as ``ViT-B-32``), always built from scratch."""

    backbone: str = "small_cnn"
    projector_dims: tuple[int, ...] = (256, 128)
    clip: str = "dejavu-tiny"

    def __post_init__(self) -> None:
        _check(len(self.projector_dims) >= 1, "model.projector_dims", "needs at least one size")


@dataclass(frozen=True)
class AugmentConfig:
    """Training views: random-resized crop (scale drawn log-uniformly) and colour jitter."""

    scale: tuple[float, float] = (0.04, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.0
    grayscale_prob: float = 0.0
    flip: bool = True

    # "batched": this product's views (one grid_sample per batch, log-uniform scale; below);
    # "torchvision": torchvision transforms v2 per image, as the methods' papers prescribe them (each
    # view's blur and solarize probabilities from the method unless given here).
    pipeline: str = "batched"
    hue: float = 0.0
    jitter_prob: float = 0.8  # torchvision pipeline: how often colour jitter applies
    blur_prob: tuple[float, ...] | None = None  # per view; None: the method's
    solarize_prob: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check(self.pipeline in ("batched", "torchvision"), "train.augment.pipeline", "must be 'batched' or 'torchvision'")
        _check(0 <= self.hue <= 0.5, "train.augment.hue", "must be in [0, 0.5]")
        _check(0 <= self.jitter_prob <= 1, "train.augment.jitter_prob", "must be in [0, 1]")
        for key in ("blur_prob", "solarize_prob"):
            value = getattr(self, key)
            _check(value is None or (value and all(0 <= p <= 1 for p in value)), f"train.augment.{key}",
                   "must be one probability in [0, 1] per view")
        _check(0 < self.scale[0] <= self.scale[1] <= 1, "train.augment.scale", "must satisfy 0 < min <= max <= 1")
        _check(0 < self.ratio[0] <= self.ratio[1], "train.augment.ratio", "must satisfy 0 < min <= max")
        for key in ("brightness", "contrast", "saturation", "grayscale_prob"):
            _check(0 <= getattr(self, key) <= 1, f"train.augment.{key}", "must be in [0, 1]")


TEXT_RANDOMIZATION_MODES = ("mask", "shuffle")


@dataclass(frozen=True)
class TextRandomizationConfig:
    """Training-time caption randomization (VLM mitigation): each caption token is replaced by a
    mask token (``mask``) or joins a random permutation of the selected tokens (``shuffle``) with
    probability ``p``; deterministic per seed and epoch, the same for both models of a pair."""

    p: float = 0.0
    mode: str = "mask"

    def __post_init__(self) -> None:
        _check(0.0 <= self.p <= 1.0, "train.text_randomization.p", "must be in [0, 1]")
        _check(self.mode in TEXT_RANDOMIZATION_MODES, "train.text_randomization.mode",
               f"must be one of {list(TEXT_RANDOMIZATION_MODES)}")


@dataclass(frozen=True)
class TrainConfig:
    """One recipe for both models of a pair; ``params`` go to the method (see study.train.methods)."""

    method: str = "supervised"
    params: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 150
    global_batch_size: int = 125
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    torch_threads: int = 1
    checkpoint_every: int = 25
    concurrent: bool = True
    seed: int = 0
    stream: str = "auto"  # auto: stream a training set whose decoded size exceeds in_memory_gb
    in_memory_gb: float = 2.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    text_randomization: TextRandomizationConfig = field(default_factory=TextRandomizationConfig)
    # The model the later stages measure: as it was after this epoch (0: the last). Training keeps
    # one at every checkpoint; a sweep over snapshot trains once (DESIGN §7, training length).
    snapshot: int = 0
    # Mixed precision for the forward passes and losses: fp32 (none), bf16 (CPU or GPU) or fp16
    # (GPU only, with loss scaling). Weights and optimiser state stay fp32.
    precision: str = "fp32"
    # SSL: also train the one-model test's crop classifier (supervised, on the public set's crops).
    crop_classifier: bool = False
    # VLM: also train a CLIP model on the public set only; its text tower retrieves public captions
    # for the one-model test (the reference without a second model).
    text_retriever: bool = False
    # False trains (or loads) model A only, the attacked model: the one-model test alone (SSL; VLM
    # with text_retriever).
    pair: bool = True
    # SSL: a model file to measure as model A instead of training it (local path or any fsspec URI):
    # a file this product saved, or a state dict of the encoder model.backbone / projector_dims /
    # method describe (the backbone's weights alone: search.representations=[backbone]).
    checkpoint: str = ""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.snapshot == 0 or (self.snapshot <= self.epochs
                                      and (self.snapshot % self.checkpoint_every == 0 or self.snapshot == self.epochs)),
               "train.snapshot", f"models are kept every train.checkpoint_every ({self.checkpoint_every}) epochs and "
               f"after the last ({self.epochs}); choose one of those epochs (0: the last)")
        _check(self.global_batch_size >= 2, "train.global_batch_size", "must be >= 2")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.warmup_epochs < self.epochs, "train.warmup_epochs", "must be in [0, epochs)")
        _check(self.num_workers >= 1, "train.num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")
        _check(self.torch_threads >= 1, "train.torch_threads", "must be >= 1")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
        _check(self.stream in ("auto", "always", "never"), "train.stream", "must be 'auto', 'always' or 'never'")
        _check(self.in_memory_gb > 0, "train.in_memory_gb", "must be > 0")
        _check(self.precision in ("fp32", "bf16", "fp16"), "train.precision", "must be 'fp32', 'bf16' or 'fp16'")


@dataclass(frozen=True)
class CropConfig:
    """Which region of a target/reference/holdout image is shown to the model (DESIGN §2.1)."""

    rule: str = "background"
    min_side: int = 8
    corner_fraction: float = 0.4

    def __post_init__(self) -> None:
        _check(self.min_side >= 1, "embed.crop.min_side", "must be >= 1 pixel")
        _check(0 < self.corner_fraction <= 1, "embed.crop.corner_fraction", "must be in (0, 1]")


@dataclass(frozen=True)
class EmbedConfig:
    """The embed stage's Ray Data pipeline (study.embed.pipeline).

    ``batch_size``: rows per model forward pass. ``actors``, ``cpus_per_actor``: model replicas and
    CPUs each (0 = sized from the cluster: one replica per GPU with ``ray.use_gpu``, else per CPU
    but one). ``rows_per_file``: most rows in one embedding file. ``write_batch_mb``: embedded rows
    (MiB, all models and views) each write task takes; files hold at most that task's share of a
    set, so this also sets the file size when it is below ``rows_per_file`` rows.
    """

    batch_size: int = 256
    actors: int = 0
    cpus_per_actor: float = 0.0
    rows_per_file: int = 100_000
    write_batch_mb: float = 256.0
    crop: CropConfig = field(default_factory=CropConfig)

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "embed.batch_size", "must be >= 1")
        _check(self.actors >= 0, "embed.actors", "must be >= 0 (0 = one per GPU with ray.use_gpu, else per CPU left)")
        _check(self.cpus_per_actor >= 0, "embed.cpus_per_actor", "must be >= 0 (0 = sized from the cluster)")
        _check(self.rows_per_file >= 1, "embed.rows_per_file", "must be >= 1")
        _check(self.write_batch_mb > 0, "embed.write_batch_mb", "must be > 0")


@dataclass(frozen=True)
class IVFPQConfig:
    """IVF-PQ parameters; 0 = chosen from N, d and memory by the FAISS guidelines
    (``study.core.ivf_params``). ``nprobe`` 0 = the smallest power of two whose recall@k on the
    recall sample reaches ``target_recall``."""

    nlist: int = 0
    code_size: int = 0  # bytes per vector (PQ sub-quantizers of 8 bits)
    nprobe: int = 0
    train_size: int = 0
    target_recall: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("nlist", "code_size", "nprobe", "train_size"):
            _check(getattr(self, key) >= 0, f"search.ivf.{key}", "must be >= 0 (0 = automatic)")
        _check(0 < self.target_recall <= 1, "search.ivf.target_recall", "must be in (0, 1]")


@dataclass(frozen=True)
class SearchConfig:
    """Sharded k-NN (``study.search``). ``shards`` 0 = as many as the memory model needs, at
    least one per node; ``memory_per_node_gb`` 0 = Ray's ``memory`` resource of the smallest node."""

    k: int = 50
    index: str = "flat"
    shards: int = 0
    metric: str = "l2_normalized"
    query_batch_size: int = 1024
    cpus_per_shard: float = 0.5
    gpus_per_shard: float = 0.0
    memory_per_node_gb: float = 0.0
    shard_headroom_gb: float = 1.0
    max_restarts: int = 3
    rows_per_file: int = 100_000
    recall_queries: int = 1000
    ivf: IVFPQConfig = field(default_factory=IVFPQConfig)
    representations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.k >= 1, "search.k", "must be >= 1")
        _check(self.index in ("flat", "ivfpq"), "search.index", "must be 'flat' (exact) or 'ivfpq'")
        _check(self.shards >= 0, "search.shards", "must be >= 0 (0 = from the memory model)")
        _check(self.metric in ("l2", "l2_normalized"), "search.metric", "must be 'l2' or 'l2_normalized'")
        _check(self.query_batch_size >= 1, "search.query_batch_size", "must be >= 1")
        _check(self.cpus_per_shard > 0, "search.cpus_per_shard", "must be > 0")
        _check(self.gpus_per_shard >= 0, "search.gpus_per_shard", "must be >= 0 (0 = CPU shards)")
        _check(self.memory_per_node_gb >= 0, "search.memory_per_node_gb", "must be >= 0 (0 = from Ray)")
        _check(self.shard_headroom_gb >= 0, "search.shard_headroom_gb", "must be >= 0")
        _check(self.max_restarts >= 0, "search.max_restarts", "must be >= 0")
        _check(self.rows_per_file >= 1, "search.rows_per_file", "must be >= 1")
        _check(self.recall_queries >= 1, "search.recall_queries", "must be >= 1")


@dataclass(frozen=True)
class MeasureConfig:
    quantiles: tuple[float, ...] = (0.05, 0.2, 1.0)
    ks: tuple[int, ...] = (1, 10, 100)
    top_n: int = 3
    headline_rule: str = "top_n"  # the VLM headline's prediction rule: union or top_n
    top_fractions: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    utility_records: int = 1000
    zero_shot_prompt: str | None = None  # e.g. "a photo of a {}"; None: the data's own template
    curve_points: int = 20
    bootstrap: int = 1000
    permutations: int = 2000
    confidence_level: float = 0.95
    seed: int = 0
    # The one-model test's naive-Bayes predictor (SSL, DESIGN §2.3): the tagger of what a crop shows
    # (study.pipeline.taggers; "" turns the test off) and its add-alpha smoothing.
    one_model_tagger: str = "synthetic_background"
    one_model_alpha: float = 1.0

    def __post_init__(self) -> None:
        _check(self.one_model_alpha > 0, "measure.one_model_alpha", "must be > 0")
        _check(all(0 < q <= 1 for q in self.quantiles) and self.quantiles, "measure.quantiles", "must be in (0, 1]")
        _check(all(k >= 1 for k in self.ks) and self.ks, "measure.ks", "must be >= 1")
        _check(self.top_n >= 1, "measure.top_n", "must be >= 1")
        _check(all(0 < f <= 1 for f in self.top_fractions) and self.top_fractions, "measure.top_fractions", "must be in (0, 1]")
        _check(self.utility_records >= 1, "measure.utility_records", "must be >= 1")
        _check(self.zero_shot_prompt is None or "{}" in self.zero_shot_prompt, "measure.zero_shot_prompt",
               "must contain {} where the class name goes")
        _check(self.curve_points >= 2, "measure.curve_points", "must be >= 2")
        _check(self.bootstrap >= 10, "measure.bootstrap", "must be >= 10")
        _check(self.permutations >= 10, "measure.permutations", "must be >= 10")
        _check(0.5 < self.confidence_level < 1, "measure.confidence_level", "must be in (0.5, 1)")


@dataclass(frozen=True)
class SSLMemConfig:
    """SSLMem (DESIGN §2.4): n augmented views per record, scored under both encoders.

    The splits play the paper's sets: shared = S_S, target = S_C (candidates, encoder f = model A
    trains on S_S and S_C), reference = S_I (g = model B on S_S and S_I), holdout = S_E (never
    trained on). ``layers`` adds intermediate modules of the encoder by dotted name (e.g.
    ``backbone.layer3`` of a ResNet, ``backbone.5`` of the small CNN), globally average-pooled.
    A candidate counts as highly memorized when its score exceeds the ``high_quantile`` quantile of
    the scores of S_E (of S_I without an S_E)."""

    views: int = 5
    representations: tuple[str, ...] = ("projector", "backbone")
    layers: tuple[str, ...] = ()
    high_quantile: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.views >= 1, "sslmem.views", "must be >= 1")
        _check(all(r in ("projector", "backbone") for r in self.representations), "sslmem.representations",
               "choose from projector, backbone (intermediate modules go in sslmem.layers)")
        _check(bool(self.representations) or bool(self.layers), "sslmem.representations",
               "name at least one representation or layer")
        _check(len(set(self.layers)) == len(self.layers) and all(self.layers), "sslmem.layers",
               "must be distinct, non-empty module names")
        _check(0 < self.high_quantile < 1, "sslmem.high_quantile", "must be in (0, 1)")

    def spaces(self) -> tuple[str, ...]:
        """What is scored: the representations, then the layers (each a space of its own)."""
        return tuple(self.representations) + tuple(self.layers)


@dataclass(frozen=True)
class ReportConfig:
    gallery_size: int = 8
    neighbors_shown: int = 5

    def __post_init__(self) -> None:
        _check(self.gallery_size >= 0, "report.gallery_size", "must be >= 0")
        _check(self.neighbors_shown >= 0, "report.neighbors_shown", "must be >= 0")


@dataclass(frozen=True)
class RayConfig:
    """How to reach Ray: ``address`` None starts a local instance (or joins the job's cluster).

    ``use_gpu`` gives each training worker and embedding replica one GPU (the driver of a Ray job
    often runs on a CPU-only head node, so this is a setting, not a guess).
    """

    address: str | None = None
    num_cpus: int | None = None
    use_gpu: bool = False
    # A stage that fails because Ray lost a node, a worker process or an actor's host is run
    # again (finished parts are reused) up to this many times before the study stops.
    stage_retries: int = 2

    def __post_init__(self) -> None:
        _check(self.stage_retries >= 0, "ray.stage_retries", "must be >= 0")
        # One CPU cannot hold an embedding replica and Ray Data's read tasks at once: the embed
        # stage would stall without an error.
        _check(self.num_cpus is None or self.num_cpus >= 2, "ray.num_cpus", "must be at least 2 (or unset: all CPUs)")


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    study: str = "ssl_dejavu"
    run_id: str = "auto"
    output: str = "runs"
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    sslmem: SSLMemConfig = field(default_factory=SSLMemConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: Mapping[str, Any] = field(default_factory=dict)
    # Train every setting this many times, with train.seed + 0 .. repeats-1: the report then gives
    # the rejection rate of each test over the runs and intervals that include training randomness.
    repeats: int = 1

    def __post_init__(self) -> None:
        # The study kind is checked against the kinds registry (study.pipeline.validate).
        _check(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        _check(bool(self.run_id) and "/" not in self.run_id, "run_id", "must be a non-empty name without '/'")
        _check(isinstance(self.repeats, int) and self.repeats >= 1, "repeats", "must be a whole number >= 1")
