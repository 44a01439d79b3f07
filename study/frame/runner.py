"""The stage runner: the study's DAG, markers, reuse, resumption and sweeps.

Every study kind runs the same stages. A stage's hash covers exactly the config sections it
reads (``reads``) and the hashes of the stages whose outputs it reads (``after``), so changing a
section reruns the stages that read it and everything downstream of them, and nothing else.
With a ``sweep`` the stages after ``splits`` run once per setting, each in its own directory,
and one report covers all settings.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable

from study import retries, storage
from study.config import StudyConfig
from study.config_load import config_hash, config_to_dict
from study.console import RunLog, stage_lines
from study.errors import StudyError, causes
from study.faults import fault
from study.frame.context import RUN_LOG, SHARED_STAGES, STAGE_NAMES, RunContext, is_complete, write_marker
from study.frame.cluster import ensure_ray
from study.frame.sweep import settings_of


@dataclass(frozen=True)
class Stage:
    name: str
    reads: Callable[[StudyConfig], tuple]
    after: tuple[str, ...]
    run: Callable[..., dict]
    needs_ray: bool = False
    takes_digest: bool = False  # train keeps a marker per model, keyed by the stage's hash
    # Whether the config runs it at all; a stage it does not run counts in no later stage's hash.
    enabled: Callable[[StudyConfig], bool] = lambda cfg: True


def _inputs(cfg: StudyConfig):
    """What the data stage reads besides its config: (name, size) of the user's input files (record
    shards, img2dataset shards and side table), if any."""
    from study.stages.data import input_fingerprint

    return input_fingerprint(cfg.data)


def _file_identity(uri: str):
    """(size, modified) of a file, or of every file under a folder, so that new weights or a new
    vocabulary at the same place count as a change; None when it is not there (the stage says so)."""
    if not uri or not storage.exists(uri):
        return None
    return sorted((i.uri, i.size, str(i.modified)) for i in storage.list_info(uri))


def _annotator_files(cfg: StudyConfig):
    from study.annotate.vocabulary import SHIPPED

    a = cfg.annotate
    return _file_identity(a.weights), None if a.vocabulary in SHIPPED else _file_identity(a.vocabulary)


def _given_splits(cfg: StudyConfig):
    """The fingerprint of ``splits.assignments`` (new contents plan the splits again); None without
    one, or when it is missing (the stage says so)."""
    from study.data.assignments import version

    if not cfg.splits.assignments or not storage.exists(cfg.splits.assignments):
        return None
    return version(cfg.splits.assignments)


def stages() -> list[Stage]:
    """The stages in run order. Imported lazily so `dejavu report` does not pay for torch and Ray."""
    from study.frame.kinds import get_kind
    from study.stages.annotate import run_annotate
    from study.stages.data import run_data
    from study.stages.embed import run_embed as embed
    from study.stages.measure import run_measure as measure
    from study.stages.report import run_report
    from study.stages.search import run_search
    from study.stages.splits import run_splits
    from study.stages.train import run_train
    from study.train.imports import file_identities

    return [
        Stage("data", lambda c: (c.data, _inputs(c)), (), run_data, needs_ray=True),
        Stage("annotate", lambda c: (c.annotate, _annotator_files(c), c.embed.crop if c.annotate.crop_tags else None),
              ("data",), run_annotate, needs_ray=True,
              takes_digest=True, enabled=lambda c: c.annotate.on),
        Stage("splits", lambda c: (c.splits, _given_splits(c)), ("data", "annotate"), run_splits, needs_ray=True),
        # Which snapshot is measured does not change the training: the stages after train read it.
        Stage("train", lambda c: (c.study, c.model, dataclasses.replace(c.train, snapshot=0), c.data.input_key(),
                                  get_kind(c.study).train_extra(c), file_identities(c)),
              ("data", "annotate", "splits"), run_train, needs_ray=True, takes_digest=True),
        Stage("embed", lambda c: (c.study, c.embed, c.splits, c.data.input_key(), c.train.snapshot,
                                  *get_kind(c.study).extra_reads(c)),
              ("data", "annotate", "splits", "train"), embed, needs_ray=True),
        Stage("search", lambda c: (c.study, c.search, c.splits), ("embed",), run_search, needs_ray=True),
        Stage("measure", lambda c: (c.study, c.measure, c.search, c.splits, c.report.gallery_size, c.data.input_key(),
                                    c.train.snapshot, *get_kind(c.study).extra_reads(c)),
              ("data", "annotate", "splits", "train", "search"), measure),
        Stage("report", lambda c: (config_to_dict(c),), ("data", "annotate", "splits", "measure"), run_report),
    ]


def stage_digest(stage: Stage, cfg: StudyConfig, digests: dict[str, str]) -> str:
    """The hash a stage's marker must hold: the sections it reads and its inputs' hashes (of the
    stages the config runs)."""
    run = {s.name for s in stages() if s.enabled(cfg)}
    return config_hash(*stage.reads(cfg), [digests[u] for u in stage.after if u in run])


def _run_stage(ctx: RunContext, stage: Stage, digests: dict[str, str], timings: dict[str, float]) -> None:
    digest = stage_digest(stage, ctx.cfg, digests)
    stage_dir = ctx.stage_dir(stage.name)
    key = f"{ctx.setting}/{stage.name}" if ctx.setting and stage.name not in SHARED_STAGES else stage.name
    done = is_complete(stage_dir, digest)
    if done:
        ctx.log(stage.name, f"reusing finished stage ({done['seconds']:.1f} s when run)")
        timings[key] = 0.0
    else:
        if fault("fail_before_stage") == stage.name:
            raise StudyError(f"fault injected before stage {stage.name} (DEJAVU_FAULTS); rerun without it to resume")
        if stage.needs_ray:
            ensure_ray(ctx.cfg)
        ctx.log(stage.name, "starting")
        start, retried = time.perf_counter(), retries.count()
        with stage_lines(ctx.log):  # its workers' progress lines, forwarded by Ray, as its own
            summary = _run_retrying(ctx, stage, digest)
        seconds = time.perf_counter() - start
        retried = retries.since(retried)  # transient object-store errors it rode out
        if retried:
            ctx.log(stage.name, f"{retried} object-store request(s) retried after a transient error")
        write_marker(stage_dir, digest, summary, seconds, retried)
        timings[key] = seconds
        ctx.log(stage.name, f"done in {seconds:.1f} s")
    digests[stage.name] = digest


def _run_retrying(ctx: RunContext, stage: Stage, digest: str) -> dict:
    """Run a stage; when Ray lost a node or process under it, run it again (its finished parts,
    such as training checkpoints and written embedding files, are reused)."""
    retries = ctx.cfg.ray.stage_retries
    for attempt in range(retries + 1):
        try:
            return stage.run(ctx, digest) if stage.takes_digest else stage.run(ctx)
        except Exception as exc:
            lost = lost_node_or_worker(exc)
            if lost is None or attempt == retries:
                raise
            ctx.log(stage.name, f"Ray lost a node or worker ({lost}); running the stage again "
                                f"({attempt + 1}/{retries} retries)")
    raise AssertionError("unreachable")


def lost_node_or_worker(exc: BaseException) -> str | None:
    """The name of the Ray error that says a node, worker process or actor host was lost, found
    in ``exc`` or its causes (Ray re-raises a task's failure wrapped), else None."""
    import ray.exceptions as rex

    lost = (rex.NodeDiedError, rex.ActorDiedError, rex.ActorUnavailableError, rex.WorkerCrashedError,
            rex.ObjectLostError, rex.OwnerDiedError, rex.ObjectReconstructionFailedError)
    return next((type(e).__name__ for e in causes(exc, context=True) if isinstance(e, lost)), None)


def setting_contexts(ctx: RunContext) -> list[tuple[str, RunContext]]:
    """(setting name, its context) per sweep setting, ``[("", ctx)]`` without a sweep. Settings
    whose training is the same (they differ only in what is measured of it: ``train.snapshot``)
    share the first one's train stage."""
    train = next(s for s in stages() if s.name == "train")
    out, trained = [], {}
    for name, scfg in settings_of(ctx.cfg):
        if not name:
            return [("", ctx)]
        first = trained.setdefault(config_hash(*train.reads(scfg)), name)
        out.append((name, dataclasses.replace(ctx.for_setting(scfg, name), train_setting=first)))
    return out


def run_study(cfg: StudyConfig, until: str | None = None) -> RunContext:
    """Run (or resume) every stage, or with ``until`` the stages up to and including that one
    (a job per stage); returns the run's context (its directory holds the report)."""
    from study.frame import cluster
    from study.frame.kinds import get_kind
    from study.frame.validate import check_registries
    from study.preflight import check_study

    if until is not None and until not in STAGE_NAMES:
        raise StudyError(f"unknown stage {until!r}; choose from {', '.join(STAGE_NAMES)}")
    wanted = set(STAGE_NAMES[: STAGE_NAMES.index(until) + 1] if until else STAGE_NAMES)
    check_registries(cfg)
    for name, setting_cfg in settings_of(cfg):  # the sweep, and each setting's config, before anything runs
        if name:
            get_kind(setting_cfg.study).check(setting_cfg)
    check_study(cfg)  # the output root takes a write (no bucket is ever created), the inputs are there
    run_log = RunLog()
    logging.getLogger("study").addHandler(run_log)  # from the join on: Ray's lines there belong to the run
    previous = None
    reads = contextlib.nullcontext()
    try:
        if any(s.needs_ray for s in stages() if s.name in wanted):
            ensure_ray(cfg)  # before anything is written: the cluster answers and can see the paths
            if "train" in wanted and cluster.own_instance(cfg.ray):  # nothing joins it: what it lacks, it always lacks
                cluster.check_resources(cluster.worker_bundle(cfg), "training", True, 0, lambda message: None)
            reads = cluster.reads_for(cfg.ray)
        ctx = RunContext.create(cfg)
        ctx.log("study", f"run directory {ctx.run_dir}")
        try:
            storage.makedirs(ctx.run_dir)
            storage.write_json(storage.join(ctx.run_dir, "config.json"), config_to_dict(cfg))
            previous = _previous_log(ctx)
        except OSError as exc:
            raise StudyError(f"cannot write to the output location {cfg.output}: {exc.strerror or exc}") from None
        with reads:
            _run_wanted(ctx, [s for s in stages() if s.name in wanted and s.enabled(cfg)],
                        lambda: _save_log(ctx, previous, run_log))
    finally:
        logging.getLogger("study").removeHandler(run_log)
        if previous is not None:
            _save_log(ctx, previous, run_log)
    return ctx


def _previous_log(ctx: RunContext) -> str:
    """What run.log holds from earlier attempts of this run (a rerun adds to it)."""
    uri = storage.join(ctx.run_dir, RUN_LOG)
    return storage.read_bytes(uri).decode(errors="replace") if storage.exists(uri) else ""


def _save_log(ctx: RunContext, previous: str, run_log: RunLog) -> None:
    """run.log under the run directory: earlier attempts' lines, then this one's. Written whole (an
    object store cannot append), after each stage and when the run ends; a store that fails here
    must not hide the error that ended the run."""
    with contextlib.suppress(Exception):
        storage.write_bytes(storage.join(ctx.run_dir, RUN_LOG), (previous + run_log.text()).encode())


def _run_wanted(ctx: RunContext, all_stages: list[Stage], saved: Callable[[], None]) -> None:
    """The stages asked for, in order: the shared ones once, the others per sweep setting, then
    the report over every setting."""
    shared = [s for s in all_stages if s.name in SHARED_STAGES and s.name != "report"]
    per_setting = [s for s in all_stages if s.name not in SHARED_STAGES]
    report = next((s for s in all_stages if s.name == "report"), None)
    digests: dict[str, str] = {}
    timings: dict[str, float] = {}
    for stage in shared:
        _run_stage(ctx, stage, digests, timings)
        saved()
    if not per_setting:
        return
    measure_digests = []
    settings = setting_contexts(ctx)
    for _, sctx in settings:
        setting_digests = dict(digests)
        for stage in per_setting:
            _run_stage(sctx, stage, setting_digests, timings)
            saved()
        measure_digests.append(setting_digests.get("measure"))
    if report is None:
        return
    digests["measure"] = config_hash(measure_digests)
    _run_stage(dataclasses.replace(ctx, settings=tuple(settings)), report, digests, timings)
    storage.write_json(storage.join(ctx.run_dir, "timings.json"), timings)
