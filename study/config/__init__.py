"""Typed, frozen study configuration: one dataclass per concern, resolved once per run.

Each stage takes the narrowest section it needs. Values are checked in ``__post_init__`` so a bad
value fails at load time with the key's dotted path in the message (see ``study.config_load``).
The sections live in ``data`` (data, splits), ``annotate``, ``train`` (model, train) and ``stages`` (embed,
search, measure, sslmem, report, ray); everything is importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from study.config.annotate import GROUND_TRUTHS, AnnotateConfig
from study.config.checks import SPLIT_NAMES, check as _check
from study.config.data import (
    COCO_CAPTION_MODES,
    COCO_LABEL_RULES,
    DATA_SOURCES,
    HF_BOX_FORMATS,
    HF_FIELDS,
    HF_FORMATS,
    CocoConfig,
    DataConfig,
    HfConfig,
    NearDuplicateConfig,
    SplitConfig,
    VocConfig,
)
from study.config.stages import (
    CropConfig,
    EmbedConfig,
    IVFPQConfig,
    MeasureConfig,
    RayConfig,
    ReportConfig,
    SearchConfig,
    SSLMemConfig,
)
from study.config.train import (
    TEXT_RANDOMIZATION_MODES,
    AugmentConfig,
    ModelConfig,
    TextRandomizationConfig,
    TrainConfig,
)

__all__ = [
    "SPLIT_NAMES", "DATA_SOURCES", "HF_FORMATS", "HF_FIELDS", "HF_BOX_FORMATS", "COCO_LABEL_RULES",
    "COCO_CAPTION_MODES", "TEXT_RANDOMIZATION_MODES", "GROUND_TRUTHS",
    "AnnotateConfig", "CocoConfig", "VocConfig", "HfConfig", "DataConfig", "NearDuplicateConfig", "SplitConfig",
    "ModelConfig", "AugmentConfig", "TextRandomizationConfig", "TrainConfig",
    "CropConfig", "EmbedConfig", "IVFPQConfig", "SearchConfig", "MeasureConfig", "SSLMemConfig",
    "ReportConfig", "RayConfig", "StudyConfig",
]


AUTO_TAGGER = "auto"


def _tagger_for(cfg: "StudyConfig") -> str:
    """What ``measure.one_model_tagger: auto`` means: the synthetic generator's captions name the
    crop's background, so its tagger reads them; other sources' captions name the foreground (the
    one-model predictor would see the label it is asked to predict), so the naive-Bayes predictor
    is off, unless an annotator tags the crops (``annotate.crop_tags``): then their tags. The study
    kinds that never read the tagger keep the value it had before "auto" existed,
    so their runs keep their ids."""
    if cfg.annotate.on and cfg.annotate.crop_tags and cfg.study == "ssl_dejavu":
        return "crop_tags"
    if cfg.data.source == "synthetic" or cfg.study != "ssl_dejavu":
        return "synthetic_background"
    return ""


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    study: str = "ssl_dejavu"
    run_id: str = "auto"
    output: str = "runs"
    # A published protocol's choices (study.config.protocols: dejavu-2023, vlm-dejavu-2024,
    # dejavu-oss-2024, sslmem-2024) under the config's own; default: the product's choices.
    protocol: str = "default"
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
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
        # The study kind is checked against the kinds registry (study.frame.validate).
        _check(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        _check(bool(self.run_id) and "/" not in self.run_id, "run_id", "must be a non-empty name without '/'")
        _check(isinstance(self.repeats, int) and self.repeats >= 1, "repeats", "must be a whole number >= 1")
        from study.config.protocols import PROTOCOLS

        _check(self.protocol in PROTOCOLS, "protocol", f"must be one of {', '.join(PROTOCOLS)}")
        if self.measure.one_model_tagger == AUTO_TAGGER:
            object.__setattr__(self, "measure", replace(self.measure, one_model_tagger=_tagger_for(self)))
