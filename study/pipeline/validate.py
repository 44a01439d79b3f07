"""Checks that need the registries (methods, backbones, crop rules, data backgrounds).

Run before any stage, so a misspelt name fails in a second with one line, not after training.
"""
from __future__ import annotations

from study.config import StudyConfig
from study.core.crops import CROP_RULES
from study.data.synthetic import BACKGROUNDS
from study.errors import ConfigError


def _one_of(value: str, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}: unknown value '{value}'; choose from {sorted(options)}")


def check_registries(cfg: StudyConfig) -> None:
    from study.train.methods import method_params
    from study.train.models import BACKBONES

    _one_of(cfg.model.backbone, BACKBONES, "model.backbone")
    _one_of(cfg.embed.crop.rule, CROP_RULES, "embed.crop.rule")
    _one_of(cfg.data.background, BACKGROUNDS, "data.background")
    method_params(cfg.train.method, cfg.train.params)
