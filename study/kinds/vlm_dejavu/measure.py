"""Stage ``measure`` of the VLM study (docs/concepts/vlm-dejavu.md): object recovery from a caption.

Per attacked record and model: the objects of its caption's k nearest public images (the union,
and the top-n by neighbour frequency) are scored against the record's objects, all of them and
those its caption does not name. Sides and controls are the frame's (``kinds.CONTROLS``):
positive on each model's own split, null on the holdout. With the text retriever, its nearest
public captions are scored the same way and the one-model test (``text_retriever.CONTROLS``) is
measured beside the two-model test; with ``measure.text_model``, the published one-model test
(``text_model.CONTROLS``: the targets' and the text model's nearest public captions). Utility (``vlm_utility``) is measured beside memorization.
"""
from __future__ import annotations

import ray

from study.report.pvalues import p_is
from study import storage
from study.frame.context import RunContext, read_marker
from study.frame.kinds import CONTROLS, get_kind
from study.kinds.vlm_dejavu import entries, outcomes
from study.kinds.vlm_dejavu.objects import object_tables
from study.kinds.vlm_dejavu.utility import utility_rows
from study.stages.id_tables import log_blocks
from study.stages.measure_tasks import (blocks_for, cpus, draw_pieces, outcome_dir, score_searches, sides_present,
                                        summarise_and_draw)


def control_results(ctx: RunContext, where: dict, controls: dict, label: str, blocks: list, records: int,
                    one_sided: bool = False) -> dict:
    """{control: {"k=../rule/variant": entry}} over the ``controls`` that can be measured
    (``sides_present``), from the outcome files ``where`` ((model, split) -> (outcome dir, search
    results dir)) in the id ranges ``blocks``, of at most ``records`` records a model. Ray tasks
    read the files: per control, variant and block, one summarises the records (sizes, the
    sample-level rankings' histograms, most memorized) and each of ``draw_pieces`` computes a range
    of the bootstrap and swap draws (the first also the block's sample-level sums); the driver
    assembles the entries from their aggregates."""
    cfg = ctx.cfg
    m = cfg.measure
    pieces = draw_pieces(m.bootstrap, m.permutations, cpus())
    sample = entries.sample_plan(m)
    groups = {}
    for control, rows in controls.items():
        have = sides_present(rows, where, one_sided)
        if have is None:
            continue
        for variant in outcomes.VARIANTS:
            groups[(control, variant)] = ((where, have, control, variant, tuple(m.ks), cfg.splits.seed, sample),
                                          (cfg.report.gallery_size, sample.limit(records)), (sample,), (m.seed,))
    out: dict = {}
    for (control, variant), (summed, drawn) in summarise_and_draw(groups, blocks, entries.summaries, entries.plan,
                                                                  entries.draws, pieces).items():
        got = out.setdefault(control, {})
        for key in summed[0]:
            entry = entries.assemble(key, variant, summed, drawn, m, cfg.report.gallery_size, sample)
            if entry is not None:
                got[f"k={key[0]}/{key[1]}/{variant}"] = entry
    for control, got in out.items():
        head = got.get(headline_key(m))
        if head:
            ctx.log("measure", f"{label} {control:<8} k={head['k']} {head['rule']} unnamed objects: PPG {head['ppg']['value']:+.3f} "
                    f"[{head['ppg']['ci'][0]:+.3f}, {head['ppg']['ci'][1]:+.3f}] {p_is(head['ppg'], sep='=')}")
    return out


def run_measure(ctx: RunContext) -> dict:
    from study.kinds.vlm_dejavu import text_model, text_retriever

    cfg = ctx.cfg
    kind = get_kind(cfg.study)
    attacked = kind.attacked_sets(cfg, ctx.uses)
    # The object tables are built by tasks, one per id range of a side, and stay in the object
    # store: the scoring tasks gather from them there; the driver gets the vocabulary and the
    # utility's few records.
    tables = object_tables(ctx.data_root, ctx.splits_dir, attacked, cfg.measure.records_per_table_block)
    log_blocks(ctx, "object tables", {"public": tables.public, "attacked": tables.attacked})
    retriever = text_retriever.searches(cfg)  # {(model, space): views}, empty when it is off
    per_space = {space: {**{model: space for model in kind.models_for(cfg)}, **{model: sp for model, sp in retriever}}
                 for space in kind.spaces_for(cfg)}
    published = text_model.searches(cfg)  # {(model, space)}, empty when measure.text_model is off
    keys = sorted({(model, split, sp) for searches in per_space.values() for model, sp in searches.items()
                   for split in attacked} | {(model, split, sp) for model, sp in published for split in attacked})
    counts = score_searches(ctx, outcomes.score_part, tables, keys, tuple(cfg.measure.ks), cfg.measure.top_n)
    first = {split: next(key for key in keys if key[1] == split) for split in attacked}  # every model: the same counts
    skipped = {f"{split}/{v}": int(counts[first[split]].get(f"no_gt/{v}", 0)) for split in attacked for v in outcomes.VARIANTS}
    # The id ranges of the statistics tasks: a control's tasks read both models' outcomes of its
    # splits, at most every attacked record of one model and space.
    records = sum(counts[first[split]].get("records", 0) for split in attacked)
    blocks = blocks_for(ctx, [outcome_dir(ctx, *first[split]) for split in attacked], records)
    results, one_model, by_text_model = {}, {}, {}
    if published:  # the published one-model test: target text towers and the text model, captions -> captions
        where = {(model, split): (outcome_dir(ctx, model, split, sp), ctx.search_results(model, split, sp))
                 for model, sp in published for split in attacked}
        by_text_model[text_model.SPACE] = control_results(ctx, where, text_model.CONTROLS,
                                                          f"{text_model.SPACE} vs. {text_model.TEXT_MODEL}", blocks,
                                                          records, one_sided=True)
    for space, searches in per_space.items():
        where = {(model, split): (outcome_dir(ctx, model, split, sp), ctx.search_results(model, split, sp))
                 for model, sp in searches.items() for split in attacked}
        results[space] = control_results(ctx, where, CONTROLS, space, blocks, records)
        if retriever:
            one_model[space] = control_results(ctx, where, text_retriever.CONTROLS,
                                               f"{space} vs. {text_retriever.RETRIEVER}", blocks, records, one_sided=True)
    from study.kinds.vlm_dejavu.utility import measure_utility

    rows = ray.get(ray.remote(num_cpus=1)(utility_rows).remote(tables, ctx.splits_dir, cfg.measure.utility_records))
    utility = measure_utility(ctx, rows)
    ctx.log("measure", "utility: " + ", ".join(f"{k} {v:.3f}" for k, v in utility.items() if isinstance(v, float)))
    vocabulary = list(tables.names)
    storage.write_json(ctx.measure_results, {"spaces": results, "utility": utility, "skipped_no_gt": skipped,
                                             "vocabulary": vocabulary, "headline_key": headline_key(cfg.measure)})
    public_captions = ((read_marker(ctx.stage_dir("embed")) or {}).get("summary", {}).get("sets", {})
                       .get("public_captions"))
    predictors = {**({text_retriever.RETRIEVER: one_model} if retriever else {}),
                  **({text_model.TEXT_MODEL: by_text_model} if published else {})}
    text_retriever.write_results(ctx, predictors, public_captions)
    return {"spaces": list(results), "utility": utility, "one_model": sorted(predictors)}


def headline_k(ks) -> int:
    """The k quoted first: 10 when measured (the paper's middle setting), else the smallest."""
    return 10 if 10 in ks else min(ks)


def headline_key(m) -> str:
    """The entry quoted first: headline k, ``measure.headline_rule``, the objects the caption does
    not name (the memorization signal). Top-n is the default rule because with a small object
    vocabulary the union of ten neighbours' objects holds nearly every object for both models."""
    return f"k={headline_k(m.ks)}/{m.headline_rule}/unnamed"
