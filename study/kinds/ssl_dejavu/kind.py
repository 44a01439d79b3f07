"""The SSL déjà vu study kind (docs/concepts/ssl-dejavu.md): label inference from a background crop.

Models A and B are image encoders (an SSL method or the supervised baseline); the public set is
embedded whole, the attacked sets as background crops; the search spaces are the backbone and
projector embeddings; the measurement is ``study.kinds.ssl_dejavu.measure``.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from study.config import StudyConfig
from study.config_load import config_to_dict
from study.data import records
from study.data.loading import load_images, load_inputs
from study.frame.context import RunContext, read_marker
from study.frame.kinds import StudyKind
from study.data.inspect_stats import crop_counts
from study.kinds.ssl_dejavu.measure import run_measure
from study.kinds.ssl_dejavu.one_model import train_crop_classifier
from study.kinds.ssl_dejavu.summary import ssl_lines
from study.kinds.ssl_dejavu.report_html import render_body
from study.stages.report import nearest_public
from study.data.model_input import ModelInput

PUBLIC = "public"
VIEWS = ("backbone", "projector")


def check(cfg: StudyConfig) -> None:
    from study.core.crops import CROP_RULES
    from study.frame.validate import one_of
    from study.errors import ConfigError
    from study.train.methods import METHODS, method_params
    from study.train.imports import check_imports
    from study.train.models import BACKBONES, is_backbone

    if not is_backbone(cfg.model.backbone):
        raise ConfigError(f"model.backbone: unknown value '{cfg.model.backbone}'; choose from {sorted(BACKBONES)} "
                          "or timm/<a timm model name>")
    one_of(cfg.embed.crop.rule, CROP_RULES, "embed.crop.rule")
    method_params(cfg.train.method, cfg.train.params)
    if cfg.measure.one_model_tagger:
        from study.kinds.ssl_dejavu.taggers import TAGGERS

        one_of(cfg.measure.one_model_tagger, TAGGERS, "measure.one_model_tagger")
        if cfg.measure.one_model_tagger == "crop_tags" and not (cfg.annotate.on and cfg.annotate.crop_tags):
            raise ConfigError("measure.one_model_tagger: crop_tags are what an annotator finds in the crops; "
                              "set annotate.annotator and annotate.crop_tags: true")
    check_imports(cfg, "ssl_dejavu")
    if cfg.train.precision == "fp16" and not cfg.ray.use_gpu:
        raise ConfigError("train.precision: fp16 needs a GPU (ray.use_gpu=true); on CPU use bf16")
    most = METHODS[cfg.train.method].max_projector_sizes
    if most and len(cfg.model.projector_dims) > most:
        raise ConfigError(f"model.projector_dims: {cfg.train.method} takes at most {most} sizes (hidden-bottleneck-output, "
                          f"e.g. 2048-256-65536), got {len(cfg.model.projector_dims)}")


def run_embed(ctx: RunContext) -> dict:
    from study.embed.pipeline import Embedder
    from study.stages.embed import embed_planned
    from study.embed.views import CROP, WHOLE, prepare_batch
    from study.stages.embed_plan import count_plan

    cfg = ctx.cfg
    attacked = KIND.attacked_sets(cfg, ctx.uses)
    planner = partial(_crop_summary, crop_cfg=cfg.embed.crop)
    plan = ctx.split_plan()
    public_n, crops = count_plan(ctx.data_root, ["id", "width", "height", "label", "boxes"], planner, attacked, plan)
    modes = {PUBLIC: WHOLE, **{s: CROP for s in attacked}}
    prepare = partial(prepare_batch, plan=plan, modes=modes,
                      crop_cfg=cfg.embed.crop, inputs=ModelInput.of(cfg.data))
    sets = embed_planned(ctx, KIND.models_for(cfg), public_n, crops, f"crops ({cfg.embed.crop.rule} rule)",
                         list(dict.fromkeys(["id", "image", "width", "height", "label", "boxes", *plan.columns()])),
                         prepare, Embedder, {s: VIEWS for s in modes})
    return {"sets": sets, "crop": vars(cfg.embed.crop)}


def _crop_summary(batch, split_of, sets, crop_cfg):
    from study.embed.views import plan_crops

    return plan_crops(batch, split_of, sets, crop_cfg)[1]


def headline(results: dict) -> dict:
    """Gap at q = 1 (top-1) per representation and control: the numbers quoted first."""
    out = {}
    for rep, controls in results.items():
        for control, res in controls.items():
            entry = max(res["top1"]["by_q"], key=lambda e: e["q"])
            out[f"{rep}/{control}"] = {
                "target": entry["target"]["value"],
                "reference": entry["reference"]["value"],
                "gap": entry["gap"]["value"],
                "ci": entry["gap"]["ci"],
                "p_value": entry["gap"]["p_value"],
                "permutations": entry["gap"].get("permutations"),
            }
    return out


def extras(ctx: RunContext) -> dict:
    from study.stages.measure import read_one_model
    from study.kinds.ssl_dejavu.utility import read_utility

    one_model = read_one_model(ctx)
    if one_model and "predictors" in one_model:
        one_model["headline"] = {name: headline(results) for name, results in one_model["predictors"].items()}
    names = ((read_marker(ctx.stage_dir("data")) or {}).get("summary") or {}).get("label_names") or []
    return {"k": ctx.cfg.search.k, "metric": ctx.cfg.search.metric, "crop_rule": config_to_dict(ctx.cfg.embed.crop),
            "utility": read_utility(ctx), "one_model": one_model, "label_names": list(names)}


def gallery(ctx: RunContext, report: dict) -> list[dict]:
    """Most-memorized records of the positive control: the original as stored, the crop and the
    nearest public images as the model saw them (model inputs)."""
    from study.embed.views import crop_for

    rep = next(iter(report["results"]), None)
    rows = report["results"].get(rep, {}).get("positive", {}).get("most_memorized", []) if rep else []
    if not rows:
        return []
    shown = ctx.cfg.report.neighbors_shown
    meta = records.read_records(ctx.data_root, [r["id"] for r in rows], columns=["id", "width", "height", "label", "boxes"])
    rects = {
        i: crop_for(w, h, b, lab, ctx.cfg.embed.crop)[0]
        for i, w, h, lab, b in zip(
            meta.column("id").to_pylist(), meta.column("width").to_pylist(), meta.column("height").to_pylist(),
            meta.column("label").to_pylist(), records.iter_boxes(meta.column("boxes")),
        )
    }
    neighbours = nearest_public(ctx, rows, rep, shown)
    inputs = ModelInput.of(ctx.cfg.data)
    originals = load_images(ctx.data_root, [r["id"] for r in rows])
    public = load_inputs(ctx.data_root, [n for ns in neighbours.values() for n in ns], inputs)
    out = []
    for r in rows:
        original = originals[r["id"]]
        x0, y0, x1, y1 = rects[r["id"]]
        out.append({
            **r,
            "representation": rep,
            "original": original,
            "crop": inputs.of_array(np.ascontiguousarray(original[y0:y1, x0:x1])),
            "neighbours": [public[n] for n in neighbours[r["id"]]],
        })
    return out


KIND = StudyKind(
    name="ssl_dejavu",
    title="SSL déjà vu test (label inference from a background crop)",
    spaces={"projector": ("projector", "projector"), "backbone": ("backbone", "backbone")},
    recipe="ssl",
    record_columns=("label", "boxes"),  # the attack's ground truth, and where its crop must not look
    check=check,
    embed=run_embed,
    measure=run_measure,
    headline=headline,
    extras=extras,
    gallery=gallery,
    html=render_body,
    # Attacked sets need a label to infer and boxes to crop around; the public set votes with labels.
    needs={"target": ("label", "boxes"), "reference": ("label", "boxes"), "holdout": ("label", "boxes"),
           "public": ("label",)},
    train_after=train_crop_classifier,
    train_extra=lambda cfg: cfg.embed.crop if cfg.train.crop_classifier else None,
    summary_lines=ssl_lines,
    value_key="gap",
    list_headline=("gap", lambda v: (v["gap"], v)),
    inspect_check=("crop", crop_counts),
)
