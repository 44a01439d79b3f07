"""The stage runner: the study's DAG (a chain here), markers, reuse and resumption.

Stage i's hash covers its own config sections and stage i-1's hash, so changing a section
reruns that stage and everything downstream while earlier stages are reused.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from study import storage
from study.config import StudyConfig
from study.config_load import config_hash, config_to_dict
from study.errors import StudyError
from study.pipeline.context import RunContext, is_complete, write_marker


@dataclass(frozen=True)
class Stage:
    name: str
    sections: Callable[[StudyConfig], tuple]
    run: Callable[..., dict]
    needs_ray: bool = False
    takes_upstream: bool = False


def _inputs(cfg: StudyConfig):
    """What the data stage reads besides its config: the user's record shards, if any."""
    from study.data.records import fingerprint

    return fingerprint(storage.absolute(cfg.data.path)) if cfg.data.source == "parquet" else None


def _stages() -> list[Stage]:
    # Imported here so that `dejavu report` and config checks do not pay for torch and Ray.
    from study.pipeline.learn import run_train
    from study.pipeline.measure import run_measure
    from study.pipeline.neighbours import run_embed, run_search
    from study.pipeline.prepare import run_data, run_splits
    from study.report.stage import run_report

    return [
        Stage("data", lambda c: (c.data, _inputs(c)), run_data),
        Stage("splits", lambda c: (c.splits,), run_splits),
        Stage("train", lambda c: (c.model, c.train), run_train, needs_ray=True, takes_upstream=True),
        Stage("embed", lambda c: (c.embed,), run_embed, needs_ray=True),
        Stage("search", lambda c: (c.search,), run_search, needs_ray=True),
        Stage("measure", lambda c: (c.measure, c.report.gallery_size), run_measure),
        Stage("report", lambda c: (c.report,), run_report),
    ]


def ensure_ray(cfg: StudyConfig) -> None:
    """Join the cluster of a Ray job (or ``ray.address``), else start a local instance."""
    import logging

    import ray

    if ray.is_initialized():
        return
    # The stages print their own progress; Ray Data's per-operator progress lines would drown it.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": cfg.ray.num_cpus}
    ray.init(log_to_driver=True, logging_level=logging.WARNING, **kwargs)


def run_study(cfg: StudyConfig) -> RunContext:
    """Run (or resume) every stage; returns the run's context (its directory holds the report)."""
    from study.pipeline.validate import check_registries

    check_registries(cfg)
    ctx = RunContext.create(cfg)
    ctx.log("study", f"run directory {ctx.run_dir}")
    try:
        storage.makedirs(ctx.run_dir)
        storage.write_json(storage.join(ctx.run_dir, "config.json"), config_to_dict(cfg))
    except OSError as exc:
        raise StudyError(f"cannot write to the output location {cfg.output}: {exc.strerror or exc}") from None
    upstream = ""
    timings: dict[str, float] = {}
    for stage in _stages():
        digest = config_hash(*stage.sections(cfg), upstream)
        stage_dir = ctx.stage_dir(stage.name)
        done = is_complete(stage_dir, digest)
        if done:
            ctx.log(stage.name, f"reusing finished stage ({done['seconds']:.1f} s when run)")
            timings[stage.name] = 0.0
        else:
            if stage.needs_ray:
                ensure_ray(cfg)
            ctx.log(stage.name, "starting")
            start = time.perf_counter()
            summary = stage.run(ctx, upstream) if stage.takes_upstream else stage.run(ctx)
            seconds = time.perf_counter() - start
            write_marker(stage_dir, digest, summary, seconds)
            timings[stage.name] = seconds
            ctx.log(stage.name, f"done in {seconds:.1f} s")
        upstream = digest
    storage.write_json(storage.join(ctx.run_dir, "timings.json"), timings)
    return ctx
