"""Stage ``embed``: the study kind's embedder (``run_embed``), and the part every kind shares: log the kind's plan (what each attacked set
embeds and what it skips, by reason), clear stray files, stream the records through the kind's
embedder with Ray Data (whose tasks write the shards; the driver gets row counts), and check that
the pipeline wrote exactly what the plan counted, for every model, set and view."""
from __future__ import annotations

from typing import Callable, Mapping

from study import storage
from study.frame.context import RunContext
from study.frame.kinds import get_kind

PUBLIC = "public"


def run_embed(ctx: RunContext) -> dict:
    """The stage: the study kind decides what is embedded, with which views (``StudyKind.embed``)."""
    return get_kind(ctx.cfg.study).embed(ctx)


def embed_planned(
    ctx: RunContext,
    models: Mapping[str, str],
    public_n: int,
    plan: dict,
    what: str,
    columns: list[str],
    prepare: Callable,
    embedder: type,
    views_of_set: Mapping[str, tuple[str, ...]],
    model_uris: Mapping[str, str] | None = None,
    only_views: bool = False,
) -> dict:
    """Run the embed pipeline for ``plan`` ({set: {"embedded", "skipped"}}); returns the stage
    summary's ``sets``. ``what`` names a set's query rows in the log (crops, captions). The models
    load from ``model_uris`` (default: the train stage's files of ``models``). Before it, each
    model's embeddings are cleared, or with ``only_views`` the sets and views this pass writes (a
    second pass over models a first pass embedded)."""
    from study.embed.pipeline import embed_all

    cfg = ctx.cfg
    for s, c in plan.items():
        skipped = ", ".join(f"{n} {r}" for r, n in c["skipped"].items()) or "none"
        ctx.log("embed", f"{s}: {c['embedded']} {what}, skipped: {skipped}")
    for model in models:  # no stray files from an interrupted attempt
        for where in ([(s, v) for s, vs in views_of_set.items() for v in vs] if only_views else [()]):
            storage.remove(storage.join(ctx.embed_dir, model, *where))
    written = embed_all(
        ctx.data_root,
        columns,
        prepare,
        embedder,
        {"model_uris": dict(model_uris) if model_uris is not None else {m: ctx.model_file(m) for m in models}},
        views_of_set,
        cfg.embed,
        ctx.embed_dir,
        use_gpu=cfg.ray.use_gpu,
        log=lambda msg, progress=None: ctx.log("embed", msg, progress=progress),
        total=public_n + sum(c["embedded"] for c in plan.values()),
    )
    expected = {PUBLIC: public_n, **{s: c["embedded"] for s, c in plan.items()}}
    planned = {(m, s, v): n for m in models for s, n in expected.items() if n for v in views_of_set[s]}
    for key in sorted(set(planned) | set(written)):
        if written.get(key, 0) != planned.get(key, 0):  # the plan and the pipeline apply one rule: a bug
            got, want = written.get(key, 0), planned.get(key, 0)
            raise RuntimeError(f"embedded {got} rows for {'/'.join(key)}, planned {want}")
    return {PUBLIC: {"embedded": public_n, "skipped": {}}, **plan}
