"""The run directory: every artifact path of a study, its stage markers and progress output.

Layout (all paths are built here and nowhere else)::

    <output>/<name>/<run id>/
        config.json, timings.json
        data/records/part-*.parquet           generated or ingested records (user shards stay where
                                              they are unless some must be quarantined)
        data/quarantine/part-*.parquet        (id, reason) of records the data stage could not use
        annotate/records/, annotate/objects/  with an annotator: the records with its objects, and
                                              its side table (one file per data shard each)
        splits/<split>.parquet, manifest.json
        [settings/<setting>/]train/<model>/model.pt, metrics.jsonl, ray_train/
        [settings/<setting>/]embed/<model>/<set>/<view>/part-*.parquet
        [settings/<setting>/]search/<model>/<set>/<space>/part-*.parquet, _parts.json
        [settings/<setting>/]search/index/<model>/<space>/<key>/trained.faiss, shard-*.faiss
        [settings/<setting>/]measure/results.json
        report/report.json, report.html

A sweep (``sweep:`` in the config) gives each setting its own ``settings/<setting>/`` for the stages
that depend on it, while records, splits and the report are shared. A stage is finished when its
directory holds ``_COMPLETE.json`` with the hash of what it reads.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from study import storage
from study.config import StudyConfig
from study.config_load import config_hash
from study.train import layout

LOG = logging.getLogger("study.run")  # the stages' progress lines
MARKER = "_COMPLETE.json"
RUN_LOG = "run.log"  # every line of the run, for a post-mortem (study.console.RunLog)
SHARED_STAGES = ("data", "annotate", "splits", "report")
# The stages' names in run order, without importing them (torch, Ray): for `dejavu report`,
# `--until` and the report's stage table; a test holds them equal to the runner's stages().
STAGE_NAMES = ("data", "annotate", "splits", "train", "embed", "search", "measure", "report")



def run_id_for(cfg: StudyConfig) -> str:
    """``run_id: auto`` names the run by its config, so rerunning a config finds its run again."""
    if cfg.run_id != "auto":
        return cfg.run_id
    from study.frame.kinds import get_kind

    parts = (cfg.study, cfg.data, cfg.splits, cfg.model, cfg.train, cfg.embed, cfg.search, cfg.measure, cfg.sweep)
    # Added only where they apply, so the runs of configs without them keep their ids.
    extra = (*get_kind(cfg.study).extra_reads(cfg), *((cfg.repeats,) if cfg.repeats != 1 else ()),
             *((cfg.annotate,) if cfg.annotate.on else ()))
    return "run-" + config_hash(*parts, *extra)[:10]


@dataclass
class RunContext:
    cfg: StudyConfig
    run_dir: str
    setting: str = ""
    # The sweep setting whose train stage this one shares (settings that differ only in what is
    # measured of the same training, such as train.snapshot); None: its own.
    train_setting: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # The sweep's settings as (name, context), handed by the runner to the report stage (which
    # reports each); empty: the run has no sweep, or the stage runs outside the runner.
    settings: tuple = ()

    @classmethod
    def create(cls, cfg: StudyConfig) -> "RunContext":
        root = storage.absolute(cfg.output)
        return cls(cfg, storage.join(root, cfg.name, run_id_for(cfg)))

    def for_setting(self, cfg: StudyConfig, setting: str) -> "RunContext":
        """The same run seen from one sweep setting (its own config and stage directories)."""
        return dataclasses.replace(self, cfg=cfg, setting=setting)

    # -- stage directories -------------------------------------------------------------------
    def stage_dir(self, stage: str, *parts: str) -> str:
        setting = self.train_setting if stage == "train" and self.train_setting is not None else self.setting
        if setting and stage not in SHARED_STAGES:
            return storage.join(self.run_dir, "settings", setting, stage, *parts)
        return storage.join(self.run_dir, stage, *parts)

    # -- artifacts -----------------------------------------------------------------------------
    @property
    def data_root(self) -> str:
        """The record shards every stage after ``data`` (and ``annotate``) reads: with an annotator
        whose objects are the ground truth (or crop tags), the annotate stage's; else the data stage's."""
        return self.annotated_root if self.cfg.annotate.writes_records else self.ingested_root

    @property
    def ingested_root(self) -> str:
        """The data stage's record shards: a user's record shards in place, else those the data
        stage writes under the run (generated, or ingested from img2dataset output)."""
        copy = self.stage_dir("data", "records")
        if self.cfg.data.source == "parquet" and not storage.exists(copy):  # a copy: some were unusable
            return storage.absolute(self.cfg.data.path)
        return copy

    @property
    def annotated_root(self) -> str:
        """The annotate stage's record shards: the data stage's, one for one, with the annotator's
        objects, boxes and labels."""
        return self.stage_dir("annotate", "records")

    @property
    def annotations(self) -> str:
        """The annotate stage's side table (``data.objects``'s columns and the scores), a file per shard."""
        return self.stage_dir("annotate", "objects")

    @property
    def quarantine_dir(self) -> str:
        """(id, reason) of the records the data stage could not use."""
        return self.stage_dir("data", "quarantine")

    def split_plan(self, thresholds: dict | None = None):
        """The split rule every stage after ``data`` applies (``core.split_plan.SplitPlan``): this
        config's fractions and seed, the study kind's needs, the records' columns, and with
        ``splits.per_class`` the per-class thresholds (given, or from the split manifest)."""
        from study.core.split_plan import SplitPlan
        from study.data import records
        from study.frame.kinds import get_kind

        cfg = self.cfg.splits
        names = records.dataset(self.data_root).schema.names
        needs = get_kind(self.cfg.study).needs
        excluded: frozenset = frozenset()
        if thresholds is None and (cfg.per_class or cfg.near_duplicates.drop):  # what the splits stage decided
            from study.core.balance import read_thresholds

            manifest = storage.read_json(self.manifest)
            thresholds = read_thresholds(manifest)
            excluded = frozenset((manifest.get("near_duplicates") or {}).get("dropped", []))
        assigned = None
        if cfg.assignments:  # the user's splits, as the splits stage wrote them
            from study.data.assignments import Assigned, assigned_uri, version

            assigned = Assigned(assigned_uri(self.splits_dir), version(cfg.assignments))
        return SplitPlan(dict(cfg.fractions), cfg.seed, dict(needs), tuple(names), dict(cfg.per_class),
                         thresholds or {}, excluded, assigned)

    def spaces(self) -> tuple[str, ...]:
        """The search spaces measured: the kind's ``spaces_for`` the config, less ``projector``
        when the config left ``search.representations`` empty and a model imported without
        projector weights has none (the train stage's summary says so; the stages after it ask)."""
        from study.frame.kinds import get_kind

        wanted = get_kind(self.cfg.study).spaces_for(self.cfg)
        if self.cfg.search.representations or "projector" not in wanted or not self.without_projector():
            return wanted
        return tuple(s for s in wanted if s != "projector")

    def without_projector(self) -> set[str]:
        """The models imported without projector weights (the train stage's summary says so)."""
        summary = (read_marker(self.stage_dir("train")) or {}).get("summary", {})
        return {m for m, v in summary.items() if isinstance(v, dict) and v.get("projector") is False}

    def uses(self, split: str) -> bool:
        """Whether the study's splits put any record in ``split``: the config's plan, or with
        ``splits.assignments`` the split manifest (the stages after ``splits`` ask)."""
        if not self.cfg.splits.assignments:
            return self.cfg.splits.uses(split)
        return storage.read_json(self.manifest)["counts"].get(split, 0) > 0

    @property
    def splits_dir(self) -> str:
        return self.stage_dir("splits")

    @property
    def manifest(self) -> str:
        return self.stage_dir("splits", "manifest.json")

    def model_dir(self, model: str) -> str:
        return self.stage_dir("train", model)

    def model_file(self, model: str) -> str:
        """The model the later stages measure: the last, or the ``train.snapshot`` epoch's."""
        snapshot = self.cfg.train.snapshot
        if snapshot in (0, self.cfg.train.epochs):
            return self.stage_dir("train", model, layout.MODEL)
        return self.stage_dir("train", model, layout.SNAPSHOTS, layout.snapshot_name(snapshot))

    @property
    def embed_dir(self) -> str:
        return self.stage_dir("embed")

    def embeddings(self, model: str, split: str, view: str) -> str:
        return self.stage_dir("embed", model, split, view)

    def search_results(self, model: str, split: str, space: str) -> str:
        """Directory of one query set's result parts (``study.search.results``)."""
        return self.stage_dir("search", model, split, space)

    def search_index(self, model: str, space: str) -> str:
        """Directory of the persisted shard indexes of one public set, one subdirectory per key."""
        return self.stage_dir("search", "index", model, space)

    @property
    def measure_results(self) -> str:
        return self.stage_dir("measure", "results.json")

    @property
    def report_json(self) -> str:
        return self.stage_dir("report", "report.json")

    @property
    def report_html(self) -> str:
        return self.stage_dir("report", "report.html")

    def log(self, stage: str, message: str, level: int = logging.INFO,
            progress: tuple[int, int | None, str] | None = None) -> None:
        """A stage's line (``study.console`` shows it as ``[elapsed] stage  message``); with
        ``progress`` = (done, total, unit) an interactive terminal shows a bar in its place."""
        LOG.log(level, message, extra={"stage": stage, "setting": self.setting, "progress": progress,
                                       "elapsed": time.perf_counter() - self.started})


def read_marker(uri: str) -> dict[str, Any] | None:
    path = storage.join(uri, MARKER)
    return storage.read_json(path) if storage.exists(path) else None


def write_marker(uri: str, digest: str, summary: dict[str, Any], seconds: float, store_retries: int = 0) -> None:
    """A finished stage: its hash, time, summary and the object-store requests it retried."""
    storage.write_json(storage.join(uri, MARKER), {"hash": digest, "seconds": round(seconds, 2), "summary": summary,
                                                   "store_retries": store_retries})


def is_complete(uri: str, digest: str) -> dict[str, Any] | None:
    marker = read_marker(uri)
    return marker if marker and marker.get("hash") == digest else None
