"""The run directory, its stage markers and progress output.

Layout: ``<output>/<name>/<run id>/<stage>/...``; a stage is finished when its directory holds
``_COMPLETE.json`` with the hash of its config and of its upstream stages' hashes.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from study import storage
from study.config import StudyConfig
from study.config_load import config_hash

MARKER = "_COMPLETE.json"


def run_id_for(cfg: StudyConfig) -> str:
    """``run_id: auto`` names the run by its config, so rerunning a config finds its run again."""
    if cfg.run_id != "auto":
        return cfg.run_id
    return "run-" + config_hash(cfg.data, cfg.splits, cfg.model, cfg.train, cfg.embed, cfg.search, cfg.measure)[:10]


@dataclass
class RunContext:
    cfg: StudyConfig
    run_dir: str
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, cfg: StudyConfig) -> "RunContext":
        root = storage.absolute(cfg.output)
        return cls(cfg, storage.join(root, cfg.name, run_id_for(cfg)))

    def stage_dir(self, stage: str, *parts: str) -> str:
        return storage.join(self.run_dir, stage, *parts)

    @property
    def data_root(self) -> str:
        if self.cfg.data.source == "parquet":
            return storage.absolute(self.cfg.data.path)
        return self.stage_dir("data", "records")

    @property
    def splits_dir(self) -> str:
        return self.stage_dir("splits")

    def log(self, stage: str, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:7.1f}s] {stage:<8} {message}", file=sys.stdout, flush=True)


def read_marker(uri: str) -> dict[str, Any] | None:
    path = storage.join(uri, MARKER)
    return storage.read_json(path) if storage.exists(path) else None


def write_marker(uri: str, digest: str, summary: dict[str, Any], seconds: float) -> None:
    storage.write_json(storage.join(uri, MARKER), {"hash": digest, "seconds": round(seconds, 2), "summary": summary})


def is_complete(uri: str, digest: str) -> dict[str, Any] | None:
    marker = read_marker(uri)
    return marker if marker and marker.get("hash") == digest else None
