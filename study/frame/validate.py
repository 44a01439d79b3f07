"""Checks that need the registries (study kinds, methods, backbones, crop rules, backgrounds, data
sources) and the data inputs' schemas.

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
    from study.frame.kinds import get_kind

    kind = get_kind(cfg.study)
    one_of(cfg.data.background, BACKGROUNDS, "data.background")
    if cfg.annotate.on:
        from study.annotate.annotators import ANNOTATORS

        one_of(cfg.annotate.annotator, ANNOTATORS, "annotate.annotator")
    kind.spaces_for(cfg)
    if "public" in kind.needs and not cfg.splits.uses("public"):
        key = "splits.per_class.public" if cfg.splits.per_class else "splits.fractions.public"
        raise ConfigError(f"{key}: must be > 0 (the {kind.name} study searches the public set)")
    if cfg.train.text_retriever and kind.train_beside is None:
        raise ConfigError(f"train.text_retriever: the {kind.name} study has no text retriever (it is the "
                          "vlm_dejavu study's one-model test)")
    kind.check(cfg)
    check_record_columns(cfg, kind.record_columns)


def check_record_columns(cfg: StudyConfig, needed: tuple[str, ...]) -> None:
    """The input must exist and fill the record columns the study kind reads: a user's record
    shards by their schema, img2dataset's output by its first shard and the side table (only
    schemas are read). For img2dataset inputs, objects, labels and boxes come from ``data.objects``."""
    from study.errors import DataError
    from study.stages.data import SOURCES

    provided = SOURCES[cfg.data.source].columns(cfg.data)  # a DataError for a missing input path
    if provided is not None and cfg.annotate.replaces:
        from study.annotate.annotators import ANNOTATORS

        provided = provided | {"objects"} | ({"boxes"} if ANNOTATORS[cfg.annotate.annotator].boxes else set()) \
            | ({"label"} if cfg.annotate.label_rule != "none" else set())
    missing = [c for c in needed if provided is not None and c not in provided]
    if missing:
        hint = "; give them in the side table data.objects" if cfg.data.source in ("webdataset", "img2dataset") else ""
        hint += " or have an annotator find them (annotate.annotator)" if hint else ""
        raise DataError(f"the records from {cfg.data.path} lack column(s) {missing}, which {cfg.study} needs{hint}")
