"""The VLM déjà vu study kind (docs/concepts/vlm-dejavu.md): object recovery from a caption.

Models A and B are CLIP-style image–text models (open_clip, from scratch); the public set is
embedded whole by the image tower, the attacked records by their caption through the text tower;
the one search space is caption -> public images; the measurement is
``study.kinds.vlm_dejavu.measure``. With ``train.text_retriever`` the one-model test runs beside it
(``study.kinds.vlm_dejavu.text_retriever``), and ``train.pair: false`` leaves model A and that test alone.
"""
from __future__ import annotations

from functools import partial

from study import storage
from study.config import StudyConfig
from study.data import records
from study.data.loading import load_images, load_inputs
from study.core.object_sets import PREDICTION_RULES
from study.errors import ConfigError
from study.frame.context import RunContext, read_marker
from study.frame.kinds import StudyKind
from study.data.inspect_stats import naming_counts
from study.kinds.vlm_dejavu.summary import vlm_lines
from study.kinds.vlm_dejavu.text_retriever import searches as retriever_searches
from study.kinds.vlm_dejavu.text_retriever import train_job as retriever_job
from study.kinds.vlm_dejavu import text_model
from study.frame.validate import one_of
from study.kinds.vlm_dejavu.measure import headline_k, run_measure
from study.kinds.vlm_dejavu.report_html import render_body
from study.data.model_input import ModelInput

PUBLIC = "public"
SPACE = "caption_to_image"


def check(cfg: StudyConfig) -> None:
    from study.train.clip import check_model_name, clip_params
    from study.train.imports import check_imports

    if cfg.train.method != "clip":
        raise ConfigError(f"train.method: the vlm_dejavu study trains 'clip' models, got '{cfg.train.method}'")
    check_model_name(cfg.model.clip)
    clip_params(cfg.train.params)
    one_of(cfg.measure.headline_rule, PREDICTION_RULES, "measure.headline_rule")
    if cfg.train.crop_classifier:
        raise ConfigError("train.crop_classifier: the vlm_dejavu study has no crop classifier (its one-model test is "
                          "train.text_retriever or measure.text_model)")
    check_imports(cfg, "vlm_dejavu")
    if not cfg.train.pair and not cfg.train.text_retriever and not cfg.measure.text_model:
        raise ConfigError("train.pair: false leaves the vlm_dejavu study without a reference; set "
                          "train.text_retriever: true or measure.text_model (a sentence-transformers model folder) "
                          "for the one-model test")
    if cfg.measure.text_model:
        import importlib.util

        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError("measure.text_model: needs the sentence-transformers package (pip install sentence-transformers)")
        if not storage.exists(cfg.measure.text_model):
            raise ConfigError(f"measure.text_model: nothing at {cfg.measure.text_model}")
    if max(cfg.measure.ks) > cfg.search.k:
        raise ConfigError(f"measure.ks: {max(cfg.measure.ks)} exceeds search.k = {cfg.search.k} (neighbours retrieved)")


def run_embed(ctx: RunContext) -> dict:
    from study.embed.captions import (IMAGE, PUBLIC_CAPTIONS, TEXT, ClipEmbedder, plan_with_public_captions,
                                      prepare_vlm_batch)
    from study.stages.embed import embed_planned
    from study.stages.embed_plan import count_plan
    from study.kinds.vlm_dejavu.text_retriever import embed_captions

    cfg = ctx.cfg
    attacked = KIND.attacked_sets(cfg, ctx.uses)
    split_plan = ctx.split_plan()
    # One counting pass plans both: the models' queries, and the public captions (the text
    # retriever's and the text model's one-model tests search them).
    captions = cfg.train.text_retriever or bool(cfg.measure.text_model)
    planned = attacked + ((PUBLIC_CAPTIONS,) if captions else ())
    public_n, plan = count_plan(ctx.data_root, ["id", "caption", "objects"], plan_with_public_captions, planned,
                                split_plan)
    public_captions = plan.pop(PUBLIC_CAPTIONS, None)
    modes = {PUBLIC: IMAGE, **{s: TEXT for s in attacked}}
    prepare = partial(prepare_vlm_batch, plan=split_plan, modes=modes, inputs=ModelInput.of(cfg.data))
    columns = list(dict.fromkeys(["id", "image", "caption", "objects", *split_plan.columns()]))
    sets = embed_planned(ctx, KIND.models_for(cfg), public_n, plan, "captions", columns, prepare, ClipEmbedder,
                         {s: (v,) for s, v in modes.items()})
    if public_captions is not None and cfg.train.text_retriever:
        embed_captions(ctx, public_captions, plan, attacked)
    if public_captions is not None and cfg.measure.text_model:
        text_model.embed_captions(ctx, public_captions, plan, attacked)
    if public_captions is not None:
        sets[PUBLIC_CAPTIONS] = public_captions
    return {"sets": sets}


def headline(results: dict) -> dict:
    """PPG, PRG and AUCG per space and control for the headline entry (``headline_key``)."""
    out = {}
    key = results["headline_key"]
    for space, controls in results["spaces"].items():
        for control, entries in controls.items():
            e = entries.get(key) or entries.get(key.replace("/unnamed", "/all"))
            if e:
                out[f"{space}/{control}/k={e['k']}"] = {"ppg": e["ppg"], "prg": e["prg"], "aucg": e["aucg"],
                                                         "rule": e["rule"], "variant": e["variant"]}
    return out


def extras(ctx: RunContext) -> dict:
    from study.stages.measure import read_one_model

    results = storage.read_json(ctx.measure_results)
    ks = list(ctx.cfg.measure.ks)
    one_model = read_one_model(ctx)
    if one_model and "predictors" in one_model:
        one_model["headline"] = {name: headline({"spaces": spaces, "headline_key": results["headline_key"]})
                                 for name, spaces in one_model["predictors"].items()}
    return {"k": headline_k(ks), "ks": ks, "metric": ctx.cfg.search.metric, "top_n": ctx.cfg.measure.top_n,
            "headline_key": results["headline_key"],
            "utility": results.get("utility", {}), "skipped_no_gt": results.get("skipped_no_gt", {}),
            "text_randomization": vars(ctx.cfg.train.text_randomization), "one_model": one_model,
            "sample_level": {"sides": ctx.cfg.measure.sample_sides, "f": ctx.cfg.measure.sample_f,
                             "size": ctx.cfg.measure.top_q_size}}


def gallery(ctx: RunContext, report: dict) -> list[dict]:
    """Top records of the positive control: caption, image with unnamed objects marked, nearest
    public images (target model), objects recovered by the target and by the reference."""
    from study.stages.report import nearest_public
    from study.kinds.vlm_dejavu.objects import object_table
    from study.core.objects import named_objects

    space = next(iter(report["results"]["spaces"]), None)
    entries = report["results"]["spaces"].get(space, {}).get("positive", {}) if space else {}
    entry = entries.get(report["headline_key"])
    rows = entry["most_memorized"] if entry else []
    if not rows:
        return []
    neighbours = nearest_public(ctx, rows, space, max(report["k"], ctx.cfg.report.neighbors_shown))
    info = object_table(ctx, [r["id"] for r in rows] + [n for ns in neighbours.values() for n in ns])
    meta = records.read_records(ctx.data_root, [r["id"] for r in rows], columns=["id", "boxes"])
    boxes = dict(zip(meta.column("id").to_pylist(), meta.column("boxes").to_pylist()))
    names = ((read_marker(ctx.stage_dir("data")) or {}).get("summary", {}) or {}).get("label_names")
    shown = ctx.cfg.report.neighbors_shown
    images = load_images(ctx.data_root, [r["id"] for r in rows])  # as stored: its boxes are marked on it
    public = load_inputs(ctx.data_root, [n for r in rows for n in neighbours[r["id"]][:shown]], ModelInput.of(ctx.cfg.data))
    out = []
    for r in rows:
        objects, caption = info[r["id"]]
        unnamed = sorted(set(objects) - set(named_objects(caption, objects)))
        retrieved = {o for n in neighbours[r["id"]][: report["k"]] for o in info[n][0]}
        marks = [b for b in (boxes[r["id"]] or []) if names and 0 <= b["label"] < len(names) and names[b["label"]] in unnamed]
        out.append({
            **r,
            "caption": caption,
            "objects": objects,
            "unnamed": unnamed,
            "recovered": sorted(retrieved & set(unnamed)),
            "original": images[r["id"]],
            "marks": marks,
            "neighbours": [public[n] for n in neighbours[r["id"]][:shown]],
        })
    return out


KIND = StudyKind(
    name="vlm_dejavu",
    title="VLM déjà vu test (object recovery from a caption)",
    spaces={SPACE: ("image", "text")},
    recipe="clip",
    check=check,
    embed=run_embed,
    measure=run_measure,
    headline=headline,
    extras=extras,
    gallery=gallery,
    html=render_body,
    record_columns=("caption", "objects"),
    extra_searches=lambda cfg: {**retriever_searches(cfg), **text_model.searches(cfg)},
    extra_reads=text_model.reads,
    # Training pairs need a caption; attacked records a caption to query with and objects to recover;
    # the public set's objects are what neighbours contribute.
    needs={"target": ("caption", "objects"), "reference": ("caption", "objects"), "holdout": ("caption", "objects"),
           "public": ("objects",), "shared": ("caption",)},
    train_beside=retriever_job,
    summary_lines=vlm_lines,
    list_headline=("PPG", lambda v: (v["ppg"]["value"], v["ppg"])),
    inspect_check=("naming", naming_counts),
)
