"""Checks that need the registries (study kinds, methods, backbones, crop rules, backgrounds).

Run before any stage, so a misspelt name fails in a second with one line, not after training.
"""
from __future__ import annotations

from study.config import StudyConfig
from study.data.synthetic import BACKGROUNDS
from study.errors import ConfigError


def one_of(value: str, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}: unknown value '{value}'; choose from {sorted(options)}")


def check_registries(cfg: StudyConfig) -> None:
    from study.pipeline.kinds import get_kind

    kind = get_kind(cfg.study)
    one_of(cfg.data.background, BACKGROUNDS, "data.background")
    kind.spaces_for(cfg)
    kind.check(cfg)
    check_record_columns(cfg, kind.record_columns)


def check_record_columns(cfg: StudyConfig, needed: tuple[str, ...]) -> None:
    """A user's record shards must hold the columns the study kind reads (the schema only is read)."""
    if cfg.data.source != "parquet" or not needed:
        return
    from study import storage
    from study.data import records
    from study.errors import DataError

    names = records.dataset(storage.absolute(cfg.data.path)).schema.names
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"record shards under {cfg.data.path} lack column(s) {missing}, which {cfg.study} needs")
