"""The SSLMem study kind (docs/concepts/sslmem.md): per-record memorization scores of an SSL encoder.

The splits play the paper's sets: shared = S_S, target = S_C (the candidates), reference = S_I
(independent), holdout = S_E (extra, never trained on). Model A is encoder f (S_S ∪ S_C), model B
encoder g (S_S ∪ S_I), trained by any SSL method of the registry with the "ssl" recipe. The embed
stage scores every record of S_C, S_I and S_E under both encoders with the same augmented views
(``study.embed.alignment``); there is no public set and no search; the measurement is
``study.kinds.sslmem.measure``.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from study.config import StudyConfig
from study.errors import ConfigError
from study.frame.context import RunContext
from study.frame.kinds import StudyKind
from study.kinds.sslmem.measure import SETS, run_measure
from study.kinds.sslmem.summary import sslmem_lines
from study.kinds.sslmem.report_html import render_body
from study.data.model_input import ModelInput

WHOLE_SETS = tuple(SETS)  # target, reference, holdout: scored whole


def check(cfg: StudyConfig) -> None:
    from study.frame.validate import one_of
    from study.train.methods import METHODS, method_params
    from study.train.models import BACKBONES, build_encoder

    one_of(cfg.model.backbone, BACKBONES, "model.backbone")
    if cfg.train.method == "supervised":
        raise ConfigError("train.method: SSLMem measures self-supervised encoders; choose one of "
                          f"{sorted(m for m in METHODS if m != 'supervised')}")
    params = method_params(cfg.train.method, cfg.train.params)
    if not cfg.train.pair or cfg.train.crop_classifier:
        raise ConfigError("train.pair / train.crop_classifier: SSLMem compares two encoders (f on shared + "
                          "candidates, g on shared + independent) and has no crop classifier")
    from study.train.imports import check_imports

    check_imports(cfg, "sslmem")  # f from train.checkpoint, g from train.checkpoint_b, where given
    if cfg.train.precision == "fp16" and not cfg.ray.use_gpu:
        raise ConfigError("train.precision: fp16 needs a GPU (ray.use_gpu=true); on CPU use bf16")
    if cfg.sslmem.layers:  # building the (untrained) encoder is cheap and names its modules
        from study.embed.alignment import check_layers

        check_layers(build_encoder(cfg.model, cfg.train.method, params, 2), cfg.sslmem.layers)


def run_embed(ctx: RunContext) -> dict:
    from study.embed.alignment import AlignmentScorer, view_name
    from study.embed.views import WHOLE, prepare_batch
    from study.stages.embed import embed_planned
    from study.stages.embed_plan import count_plan

    cfg = ctx.cfg
    sets = KIND.attacked_sets(cfg, ctx.uses)
    plan = ctx.split_plan()
    _, counted = count_plan(ctx.data_root, ["id"], _whole, sets, plan)
    prepare = partial(prepare_batch, plan=plan, modes={s: WHOLE for s in sets}, crop_cfg=cfg.embed.crop,
                      inputs=ModelInput.of(cfg.data))
    views = tuple(view_name(s) for s in cfg.sslmem.spaces())
    ctx.log("embed", f"scoring {cfg.sslmem.views} views per record of {', '.join(sets)} in "
                     f"{', '.join(cfg.sslmem.spaces())} under both encoders")
    scorer = partial(AlignmentScorer, spaces=cfg.sslmem.spaces(), views=cfg.sslmem.views, augment=cfg.train.augment,
                     seed=cfg.sslmem.seed)
    out = embed_planned(ctx, KIND.models_for(cfg), 0, counted, "records",
                        list(dict.fromkeys(["id", "image", "width", "height", "label", "boxes", *plan.columns()])),
                        prepare, scorer, {s: views for s in sets})
    out.pop("public", None)
    return {"sets": out, "views": cfg.sslmem.views, "spaces": list(cfg.sslmem.spaces())}


def _whole(batch, split_of, sets) -> dict:
    """Every record of a scored set is scored (whole image): nothing is skipped."""
    return {s: {"embedded": int((split_of == s).sum()), "skipped": {}} for s in sets}


def headline(results: dict) -> dict:
    """Per space: the candidates' mean raw score against the independent set's, with its test."""
    out = {}
    for space, res in results.items():
        for control, comp in res["raw"]["tests"].items():
            diff = comp["mean_difference"]
            out[f"{space}/candidates-vs-{control}"] = {
                "difference": diff["value"], "ci": diff["ci"], "p_value": diff["p_value"],
                "permutations": diff.get("permutations"), "auc": comp["auc"]["value"], "high_share": comp["high_share"]["value"],
                "expected_high_share": comp["high_share"]["expected"],
            }
    return out


def extras(ctx: RunContext) -> dict:
    from study.kinds.sslmem.measure import SCORES_FILE

    c = ctx.cfg.sslmem
    return {"sslmem": {"views": c.views, "spaces": list(c.spaces()), "high_quantile": c.high_quantile,
                       "augment": "train.augment (the training views)", "seed": c.seed,
                       "scores": ctx.stage_dir("measure", SCORES_FILE),
                       "normalisation": "(align_g - align_f) / (align_g + align_f)"}}


def gallery(ctx: RunContext, report: dict) -> list[dict]:
    """The most memorized candidates of the first space: the image and the views it was scored with."""
    import torch

    from study.data.loading import load_inputs
    from study.embed.alignment import record_views
    from study.train.models import normalize

    space = next(iter(report["results"]), None)
    rows = report["results"][space]["most_memorized"] if space else []
    if not rows:
        return []
    images = load_inputs(ctx.data_root, [r["id"] for r in rows], ModelInput.of(ctx.cfg.data))
    x = normalize(torch.from_numpy(np.stack([images[r["id"]] for r in rows])).permute(0, 3, 1, 2))
    views = record_views(x, [r["id"] for r in rows], ctx.cfg.sslmem.views, ctx.cfg.train.augment, ctx.cfg.sslmem.seed)
    shown = (views * 0.25 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 0, 3, 4, 2).numpy()
    return [{**r, "space": space, "original": images[r["id"]], "views": list(shown[i])} for i, r in enumerate(rows)]


KIND = StudyKind(
    name="sslmem",
    title="SSLMem: per-record memorization scores (alignment of augmented views)",
    spaces={},  # nothing is searched
    recipe="ssl",
    check=check,
    embed=run_embed,
    measure=run_measure,
    headline=headline,
    extras=extras,
    gallery=gallery,
    html=render_body,
    attacked=WHOLE_SETS,
    extra_reads=lambda c: (c.sslmem, c.train.augment),
    summary_lines=sslmem_lines,
    value_key="difference",
    list_headline=("score difference", lambda v: (v["difference"], v)),
)
