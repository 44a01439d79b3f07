"""The models and how they train: ``model`` and ``train`` (with its augmentation and text
randomization)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from study.config.checks import ADDED, check as _check


# study.train.ssl_formats.FORMATS and study.train.clip_import's formats, and "auto".
CHECKPOINT_FORMATS = ("auto", "byol", "dino", "lightning", "lightly", "state dict", "open_clip_train", "open_clip folder")


@dataclass(frozen=True)
class ModelConfig:
    """SSL: backbone and projector (for the supervised method the projector is the classifier head).
    VLM: ``clip``, an open_clip model name (the product's own tiny CPU configs or a standard one
    such as ``ViT-B-32``), built from scratch or, with ``train.checkpoint``, the architecture of
    weights trained elsewhere.

    ``image_mean`` / ``image_std``: the per-channel normalisation an imported model was trained
    with (empty: its own config's where it has one, else open_clip's default for CLIP models and
    ImageNet's for SSL encoders). Models this product trains keep their own (0.5 / 0.25)."""

    backbone: str = "small_cnn"
    projector_dims: tuple[int, ...] = (256, 128)
    clip: str = "dejavu-tiny"
    image_mean: tuple[float, ...] = field(default=(), metadata=ADDED)
    image_std: tuple[float, ...] = field(default=(), metadata=ADDED)

    def __post_init__(self) -> None:
        _check(len(self.projector_dims) >= 1, "model.projector_dims", "needs at least one size")
        _check(len(self.image_mean) in (0, 3), "model.image_mean", "must be three values (R, G, B) or empty")
        _check(len(self.image_std) in (0, 3) and all(s > 0 for s in self.image_std), "model.image_std",
               "must be three positive values (R, G, B) or empty")


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
    # How often Ray Train's controller polls its workers (seconds): a finished or failed fit is
    # noticed within this. Ray's own default is 2 s, which adds seconds to every small fit; polling
    # is one cheap call per worker, so raise this only for fits of hundreds of workers.
    poll_s: float = field(default=0.5, metadata=ADDED)
    # Where a fit runs. auto: on the study's own instance (no ray.address), a fit of one worker from
    # memory runs its loop in one Ray task (retried from its last checkpoint if its process is
    # lost), without Ray Train's controller, worker group and their helper actors, five processes a
    # fit that cost a small study seconds; fits of several workers, streamed fits and every fit on
    # a cluster run on Ray Train. ray_train: every fit on Ray Train. The loop, and so the model, is
    # the same either way.
    runner: str = field(default="auto", metadata=ADDED)
    seed: int = 0
    stream: str = "auto"  # auto: stream a training set whose decoded size exceeds in_memory_gb
    in_memory_gb: float = 2.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    text_randomization: TextRandomizationConfig = field(default_factory=TextRandomizationConfig)
    # The model the later stages measure: as it was after this epoch (0: the last). Training keeps
    # one at every checkpoint; a sweep over snapshot trains once.
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
    # A model trained elsewhere, measured as model A instead of training it (local path or any
    # fsspec URI), and likewise model B: formats in study.train.imports (SSL: a file this product
    # saved, a state dict of the encoder model.backbone / projector_dims / method describe, or the
    # official BYOL release's pickle with model.backbone: resnet50-haiku; VLM: open_clip_train's
    # epoch_N.pt, a folder with open_clip_config.json, or a state dict of model.clip's architecture).
    checkpoint: str = ""
    checkpoint_b: str = field(default="", metadata=ADDED)
    # The layout of both files (auto: told from the contents); a name where that is ambiguous, such
    # as a lightly backbone saved without its head (``backbone.N`` keys, as a Sequential of the
    # product's own small_cnn has them): byol, dino, lightning, lightly, state dict (SSL encoders), or
    # open_clip_train, open_clip folder (CLIP models).
    checkpoint_format: str = field(default="auto", metadata=ADDED)

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
        _check(self.poll_s > 0, "train.poll_s", "must be > 0")
        _check(self.runner in ("auto", "ray_train"), "train.runner", "must be 'auto' or 'ray_train'")
        _check(self.stream in ("auto", "always", "never"), "train.stream", "must be 'auto', 'always' or 'never'")
        _check(self.in_memory_gb > 0, "train.in_memory_gb", "must be > 0")
        _check(self.precision in ("fp32", "bf16", "fp16"), "train.precision", "must be 'fp32', 'bf16' or 'fp16'")
        _check(self.checkpoint_format in CHECKPOINT_FORMATS, "train.checkpoint_format",
               f"must be one of {list(CHECKPOINT_FORMATS)}")
