"""Stage ``measure`` of the SSL study: the four runs (docs/concepts/ssl-dejavu.md) turned into the population test.

Positive control: side a = target split (A is target, B reference), side b = reference split
(roles swapped). Null control: the holdout split, split in two halves by a keyed hash, plays the
same two roles; neither model saw it, so its gap should cover 0.

Everything per record happens in Ray tasks: tasks put the splits' labels in the object store in
blocks of id ranges (``outcomes.label_tables``), one task per part of the search results scores its queries and
writes their outcomes (``outcomes.score_part``), one task runs the one-model test's predictors
and writes theirs, and per control one task ranks the records and a few draw the bootstrap and
swap samples (``entries``). The driver holds counts and per-side aggregates.
"""
from __future__ import annotations

import ray

from study import storage
from study.core.accuracy_draws import TopFractions
from study.frame.context import RunContext
from study.frame.kinds import CONTROLS, get_kind
from study.kinds.ssl_dejavu import entries, outcomes
from study.kinds.ssl_dejavu.one_model import predictor_dir, predictors
from study.kinds.ssl_dejavu.utility import measure_utility
from study.report.pvalues import p_is
from study.stages.measure import ONE_MODEL_CONTROLS, PREDICTOR, write_one_model
from study.stages.id_tables import log_blocks
from study.stages.measure_tasks import cpus, draw_pieces, outcome_dir, rank_and_draw, score_searches, sides_present


def control_results(ctx: RunContext, where: dict, controls: dict, label: str, one_sided: bool = False) -> dict:
    """{control: results} over the ``controls`` that can be measured (``sides_present``), from the
    outcome files ``where`` ((model, split) -> (outcome dir, search results dir)). Per control one Ray task ranks the
    records (curve, most memorized) and each of ``draw_pieces`` computes a range of the draws;
    the driver assembles the results from their aggregates."""
    cfg, m = ctx.cfg, ctx.cfg.measure
    groups = {}
    for control, rows in controls.items():
        have = sides_present(rows, where, one_sided)
        if have is not None:
            groups[control] = ((where, have, control, cfg.splits.seed), (m.curve_points, cfg.report.gallery_size),
                               (TopFractions(m.quantiles, m.top_q_size), m.seed))
    out = {}
    pieces = draw_pieces(m.bootstrap, m.permutations, cpus())
    for control, (ranked, drawn) in rank_and_draw(groups, entries.ranking, entries.draws, pieces).items():
        got = entries.assemble(ranked, drawn, m)
        if got is None:
            continue
        out[control] = got
        gap = max(got["top1"]["by_q"], key=lambda e: e["q"])["gap"]
        ctx.log("measure", f"{label:<9} {control:<8} gap@q=1 {gap['value']:+.3f} "
                f"[{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] {p_is(gap, sep='=')}")
    return out


def no_predictor_note(cfg) -> str:
    """Why a study has no one-model test, as the report says it."""
    if cfg.measure.one_model_tagger:
        tagger = f"no public record has a tag of measure.one_model_tagger ({cfg.measure.one_model_tagger})"
    else:
        tagger = (f"measure.one_model_tagger is off (by default off for data.source={cfg.data.source}: its captions "
                  "name the crop's foreground, which the predictor must not see; have an annotator tag the crops "
                  "(annotate.crop_tags), or set it to a tagger of the background when the captions describe that)")
    return f"no predictor: {tagger}, and train.crop_classifier is off"


def run_measure(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    kind = get_kind(cfg.study)
    num_classes = storage.read_json(ctx.manifest)["num_classes"]
    attacked = sorted({s for rows in CONTROLS.values() for _, s, _, _ in rows if ctx.uses(s)})
    models, spaces = kind.models_for(cfg), ctx.spaces()
    tables = outcomes.label_tables(ctx.splits_dir, attacked, num_classes, cfg.measure.records_per_table_block)
    log_blocks(ctx, "label tables", {"public": tables.public, **tables.attacked})
    predicted = ray.remote(num_cpus=1)(predictors).remote(ctx, attacked, num_classes)
    keys = [(model, split, rep) for rep in spaces for split in attacked for model in models]
    # Each query's ground truth comes from its own split's labels.
    counts = score_searches(ctx, outcomes.score_part, tables, keys, per_key=lambda key: (key[1],))
    predicted = ray.get(predicted)
    results, one_model, dropped = {}, {name: {} for name in predicted}, {}
    for rep in spaces:
        where = {(model, split): (outcome_dir(ctx, model, split, rep), ctx.search_results(model, split, rep))
                 for model in models for split in attacked}
        dropped[rep] = {c: sum(int(counts[k].get(c, 0)) for k in keys if k[2] == rep) for c in outcomes.COUNTS}
        if dropped[rep]["unlabelled_neighbours"] or dropped[rep]["unlabelled_queries"]:
            ctx.log("measure", f"{rep}: {dropped[rep]['unlabelled_neighbours']} of {dropped[rep]['neighbours']} "
                    f"neighbours have no label (no vote); {dropped[rep]['unlabelled_queries']} queries without "
                    "a label left out")
        results[rep] = control_results(ctx, where, CONTROLS, rep)
        for name, by_split in predicted.items():
            with_predictor = {**where, **{(PREDICTOR, split): (predictor_dir(ctx, name, split), None)
                                                for split in by_split}}
            one_model[name][rep] = control_results(ctx, with_predictor, ONE_MODEL_CONTROLS, f"{rep} vs. {name}",
                                                   one_sided=True)
    storage.write_json(ctx.measure_results, results)
    write_one_model(ctx, {"tagger": cfg.measure.one_model_tagger, "predictors": one_model} if predicted else
                    {"note": no_predictor_note(cfg)})
    utility = measure_utility(ctx, models)
    for rep, per_model in utility.get("linear_probe", {}).items():
        ctx.log("measure", f"{rep:<9} linear probe " + ", ".join(
            f"{m} {a['value']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]" for m, a in per_model.items())
            + f" (chance {utility['chance']:.3f})")
    return {"representations": list(results), "dropped": dropped, "utility": utility, "one_model": sorted(predicted)}
