"""Stage ``measure`` of the VLM study (docs/concepts/vlm-dejavu.md): object recovery from a caption.

Per attacked record and model: the objects of its caption's k nearest public images (the union,
and the top-n by neighbour frequency) are scored against the record's objects, all of them and
those its caption does not name. Sides and controls are the frame's (``kinds.CONTROLS``):
positive on each model's own split, null on the holdout. With the text retriever, its nearest
public captions are scored the same way and the one-model test (``text_retriever.CONTROLS``) is
measured beside the two-model test. Utility (``vlm_utility``) is measured beside memorization.
"""
from __future__ import annotations

import numpy as np

import ray

from study.report.pvalues import p_is
from study import storage
from study.core.object_sets import PREDICTION_RULES
from study.core.objects import ObjectSide, most_memorized, population_test, sample_level
from study.frame.context import RunContext, read_marker
from study.frame.kinds import CONTROLS, get_kind, side_mask
from study.kinds.vlm_dejavu import outcomes
from study.kinds.vlm_dejavu.objects import object_tables
from study.kinds.vlm_dejavu.utility import utility_rows
from study.search import results
from study.search.results import check_same_queries

IN_FLIGHT_PER_CPU = 2  # scoring tasks submitted per CPU of the cluster at a time
PROGRESS_PARTS = 20  # with this many parts or more, progress is logged every tenth of them


def outcome_dir(ctx: RunContext, model: str, split: str, space: str) -> str:
    return ctx.stage_dir("measure", "outcomes", model, split, space)


def score_searches(ctx: RunContext, tables, keys: list[tuple[str, str, str]]) -> dict:
    """Score every part of the given searches ((model, split, space)) in Ray tasks, each writing
    its outcome file; returns {key: summed counts}. At most IN_FLIGHT_PER_CPU tasks per CPU are
    queued at once, and progress is logged as parts finish."""
    m = ctx.cfg.measure
    task = ray.remote(num_cpus=1)(outcomes.score_part)
    jobs = []
    for key in keys:
        uri = ctx.search_results(*key)
        out = outcome_dir(ctx, *key)
        storage.remove(out)
        parts = int(storage.read_json(storage.join(uri, results.PARTS))["complete"])
        jobs += [(key, uri, j, out) for j in range(parts)]
    window = max(1, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    counts: dict = {key: {} for key in keys}
    pending: dict = {}
    done = 0
    for job in jobs + [None] * window:
        if job is not None:
            key, uri, j, out = job
            pending[task.remote(tables, uri, j, out, tuple(m.ks), m.top_n)] = key
        if len(pending) >= window or (job is None and pending):
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            for name, value in ray.get(ready[0]).items():
                counts[key][name] = counts[key].get(name, 0) + value
            done += 1
            if len(jobs) >= PROGRESS_PARTS and done % (len(jobs) // 10) == 0 and done < len(jobs):
                ctx.log("measure", f"scored {done}/{len(jobs)} parts of search results")
    records = sum(c.get("records", 0) for c in counts.values())
    ctx.log("measure", f"scored {records} queries' outcomes from {len(jobs)} parts of search results in tasks")
    return counts


def split_scores(ctx: RunContext, split: str, searches: dict[str, str], counts: dict, skipped: dict) -> dict:
    """{(model, split): {(k, rule, variant): (ids, scores dict)}} of one attacked split for each
    model's search (``searches``: model -> space), read from the outcome files; records without
    ground truth for a variant are left out and counted in ``skipped``. Every model must hold the
    same queries."""
    m = ctx.cfg.measure
    uris = {model: ctx.search_results(model, split, space) for model, space in searches.items()}
    read = {model: outcomes.read_outcomes(outcome_dir(ctx, model, split, space), m.ks)
            for model, space in searches.items()}
    check_same_queries({model: ids for model, (ids, _) in read.items()}, uris)
    first = next(iter(searches.items()))
    for variant in outcomes.VARIANTS:
        skipped[f"{split}/{variant}"] = int(counts[(first[0], split, first[1])].get(f"no_gt/{variant}", 0))
    scores = {}
    for model, (_, by_variant) in read.items():
        per = scores.setdefault((model, split), {})
        for variant, (ids, by_key) in by_variant.items():
            for (k, rule), sc in by_key.items():
                per[(k, rule, variant)] = (ids, sc)
    return {key: {(k, rule, v): per[(k, rule, v)] for v in outcomes.VARIANTS for k in m.ks for rule in PREDICTION_RULES}
            for key, per in scores.items()}


def control_entries(scores: dict, rows: list, control: str, m, seed: int, gallery_size: int) -> dict:
    """{"k=../rule/variant": PPG, PRG, AUCG with intervals and p-values, sample-level gaps, most
    memorized} of one control, from per-record scores ({(model, split): {(k, rule, variant): (ids,
    overlap dict)}}) and its sides ``rows`` ((side, split, target model, reference model)); pure."""
    entries = {}
    test_args = dict(bootstrap=m.bootstrap, permutations=m.permutations, level=m.confidence_level, seed=m.seed)
    for key in scores[(rows[0][2], rows[0][1])]:
        sides = []
        for side_name, split, tgt, ref in rows:
            t_ids, t_sc = scores[(tgt, split)][key]
            _, r_sc = scores[(ref, split)][key]
            sel = side_mask(t_ids, control, side_name, seed)
            sides.append(ObjectSide(
                ids=t_ids[sel],
                target_precision=t_sc["precision"][sel], target_recall=t_sc["recall"][sel], target_hits=t_sc["hits"][sel],
                reference_precision=r_sc["precision"][sel], reference_recall=r_sc["recall"][sel], reference_hits=r_sc["hits"][sel],
            ))
        k, rule, variant = key
        if sum(len(s) for s in sides) == 0:
            continue
        entries[f"k={k}/{rule}/{variant}"] = {
            "k": k, "rule": rule, "variant": variant,
            **population_test(sides, bins=100, **test_args),
            "sample_level": sample_level(sides, m.top_fractions),
            "most_memorized": [
                {**r, "split": rows[r["side"]][1], "target_model": rows[r["side"]][2], "reference_model": rows[r["side"]][3]}
                for r in most_memorized(sides, gallery_size)
            ],
        }
    return entries


def control_results(ctx: RunContext, scores: dict, controls: dict, label: str, one_sided: bool = False) -> dict:
    """{control: entries} over the ``controls`` whose sides' scores are all there (the two-model
    test's), or with ``one_sided`` over the sides whose scores are there (the one-model test's:
    model A alone has one side)."""
    cfg = ctx.cfg
    out = {}
    for control, rows in controls.items():
        have = [row for row in rows if (row[2], row[1]) in scores and (row[3], row[1]) in scores]
        if len(have) < len(rows) and not (one_sided and have):
            continue
        out[control] = control_entries(scores, have, control, cfg.measure, cfg.splits.seed, cfg.report.gallery_size)
        head = out[control].get(headline_key(cfg.measure))
        if head:
            ctx.log("measure", f"{label} {control:<8} k={head['k']} {head['rule']} unnamed objects: PPG {head['ppg']['value']:+.3f} "
                    f"[{head['ppg']['ci'][0]:+.3f}, {head['ppg']['ci'][1]:+.3f}] {p_is(head['ppg'], sep='=')}")
    return out


def run_measure(ctx: RunContext) -> dict:
    from study.kinds.vlm_dejavu import text_retriever

    cfg = ctx.cfg
    kind = get_kind(cfg.study)
    attacked = kind.attacked_sets(cfg)
    # The object tables are built by a task and stay in the object store: the scoring tasks read
    # them there, the driver gets the vocabulary and the utility's few records.
    tables = ray.remote(num_cpus=1)(object_tables).remote(ctx.data_root, ctx.splits_dir, attacked)
    retriever = text_retriever.searches(cfg)  # {(model, space): views}, empty when it is off
    per_space = {space: {**{model: space for model in kind.models_for(cfg)}, **{model: sp for model, sp in retriever}}
                 for space in kind.spaces_for(cfg)}
    keys = sorted({(model, split, sp) for searches in per_space.values() for model, sp in searches.items()
                   for split in attacked})
    counts = score_searches(ctx, tables, keys)
    results, one_model, skipped = {}, {}, {}
    for space, searches in per_space.items():
        scores = {}
        for split in attacked:
            scores.update(split_scores(ctx, split, searches, counts, skipped))
        results[space] = control_results(ctx, scores, CONTROLS, space)
        if retriever:
            one_model[space] = control_results(ctx, scores, text_retriever.CONTROLS,
                                               f"{space} vs. {text_retriever.RETRIEVER}", one_sided=True)
    from study.kinds.vlm_dejavu.utility import measure_utility

    rows = ray.get(ray.remote(num_cpus=1)(utility_rows).remote(tables, ctx.splits_dir, cfg.measure.utility_records))
    utility = measure_utility(ctx, rows)
    ctx.log("measure", "utility: " + ", ".join(f"{k} {v:.3f}" for k, v in utility.items() if isinstance(v, float)))
    vocabulary = ray.get(ray.remote(num_cpus=1)(_names).remote(tables))
    storage.write_json(ctx.measure_results, {"spaces": results, "utility": utility, "skipped_no_gt": skipped,
                                             "vocabulary": vocabulary, "headline_key": headline_key(cfg.measure)})
    public_captions = ((read_marker(ctx.stage_dir("embed")) or {}).get("summary", {}).get("sets", {})
                       .get("public_captions"))
    text_retriever.write_results(ctx, one_model if retriever else None, public_captions)
    return {"spaces": list(results), "utility": utility, "one_model": sorted(one_model)}


def _names(tables) -> list[str]:
    return list(tables.names)


def headline_k(ks) -> int:
    """The k quoted first: 10 when measured (the paper's middle setting), else the smallest."""
    return 10 if 10 in ks else min(ks)


def headline_key(m) -> str:
    """The entry quoted first: headline k, ``measure.headline_rule``, the objects the caption does
    not name (the memorization signal). Top-n is the default rule because with a small object
    vocabulary the union of ten neighbours' objects holds nearly every object for both models."""
    return f"k={headline_k(m.ks)}/{m.headline_rule}/unnamed"
