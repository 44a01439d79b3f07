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

from study.report.pvalues import p_is
from study import storage
from study.core.object_sets import PREDICTION_RULES, ObjectSets, neighbour_votes, overlap
from study.core.objects import ObjectSide, most_memorized, named_objects, population_test, sample_level
from study.data.lookup import IdIndex
from study.frame.context import RunContext, read_marker
from study.frame.kinds import CONTROLS, get_kind, side_mask
from study.kinds.vlm_dejavu.objects import ObjectTables, object_sets, object_tables
from study.search.results import check_queries, check_same_queries, iter_results, public_rows

BATCH_ROWS = 65_536  # records or queries per batch
SCORE_ROWS = 8_192  # queries per scoring batch: ~k x 5 objects x 40 bytes each at its peak, ~160 MB at k = 100
VARIANTS = ("all", "unnamed")  # ground truth: every object, or those the caption does not name


def ground_truth(objects: list, captions: list, variant: str, vocab: dict[str, int]) -> tuple[np.ndarray, ObjectSets]:
    """(keep (n,) bool: records with ground truth for this variant, the kept records' object
    sets), from the queries' objects and captions in query order."""
    rows = objects
    if variant == "unnamed":
        rows = [sorted(set(o) - set(named_objects(c, o))) for o, c in zip(objects, captions)]
    keep = np.array([len(g) > 0 for g in rows], dtype=bool)
    return keep, object_sets([g for g, k in zip(rows, keep) if k], vocab)


def read_neighbours(uri: str, public: IdIndex) -> tuple[np.ndarray, np.ndarray]:
    """(query ids (n,) str, neighbour rows of the public set (n, k)) of one search, in batches; a
    StudyError if a neighbour is not a public record."""
    ids, rows = [], []
    for batch in iter_results(uri, BATCH_ROWS):
        ids.append(np.asarray(batch.column("query_id").to_pylist(), dtype=str))
        rows.append(public_rows(batch.column("neighbor_ids"), public, uri))
    k = max((r.shape[1] for r in rows), default=0)
    rows = [np.pad(r, ((0, 0), (0, k - r.shape[1])), constant_values=-1) for r in rows]
    return (np.concatenate(ids) if ids else np.zeros(0, str)), (np.concatenate(rows) if rows else np.zeros((0, 0), np.int64))


def in_id_order(ids: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query ids and neighbour rows sorted by id: results do not depend on the order of the
    result files, and the models' rows align once they hold the same queries."""
    order = np.argsort(ids, kind="stable")
    return ids[order], I[order]


def record_scores(I: np.ndarray, public_objects: ObjectSets, gt: ObjectSets, k: int, rule: str, top_n: int) -> dict:
    """Per-record hits, |pred|, |GT|, precision, recall, F of one model's predictions at one k,
    SCORE_ROWS queries at a time: the votes of a batch hold a (query, object) pair per object of
    each of a query's first k neighbours, about k x objects per image pairs a query."""
    if len(I) <= SCORE_ROWS:
        return overlap(gt, PREDICTION_RULES[rule](neighbour_votes(public_objects, I, min(k, I.shape[1])), top_n))
    parts = [record_scores(I[start : start + SCORE_ROWS], public_objects,
                           gt.take(np.arange(start, min(start + SCORE_ROWS, len(I)))), k, rule, top_n)
             for start in range(0, len(I), SCORE_ROWS)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def split_scores(ctx: RunContext, tables: ObjectTables, split: str, searches: dict[str, str],
                 skipped: dict) -> dict:
    """{(model, split): {(k, rule, variant): (ids, overlap dict)}} of one attacked split for each
    model's search (``searches``: model -> space); records without ground truth for a variant are
    left out and counted in ``skipped``. Every model must hold the same queries."""
    m = ctx.cfg.measure
    uris = {model: ctx.search_results(model, split, space) for model, space in searches.items()}
    searched = {model: read_neighbours(uri, tables.public) for model, uri in uris.items()}
    check_same_queries({model: ids for model, (ids, _) in searched.items()}, uris)
    searched = {model: in_id_order(ids, I) for model, (ids, I) in searched.items()}
    q_ids = next(iter(searched.values()))[0]
    rows = tables.attacked.rows(q_ids)
    check_queries(q_ids, rows, next(iter(uris.values())))
    objects = [tables.attacked_objects[r] for r in rows]
    captions = [tables.attacked_captions[r] for r in rows]
    truths = {variant: ground_truth(objects, captions, variant, tables.vocab) for variant in VARIANTS}  # same for every model
    for variant, (keep, _) in truths.items():
        skipped[f"{split}/{variant}"] = int((~keep).sum())
    scores = {}
    for model, (_, I) in searched.items():
        scores[(model, split)] = {
            (k, rule, variant): (q_ids[keep], record_scores(I[keep], tables.public_objects, gt, k, rule, m.top_n))
            for variant, (keep, gt) in truths.items() for k in m.ks for rule in PREDICTION_RULES}
    return scores


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
    tables = object_tables(ctx, attacked)
    retriever = text_retriever.searches(cfg)  # {(model, space): views}, empty when it is off
    results, one_model, skipped = {}, {}, {}
    for space in kind.spaces_for(cfg):
        searches = {**{model: space for model in kind.models_for(cfg)}, **{model: sp for model, sp in retriever}}
        scores = {}
        for split in attacked:
            scores.update(split_scores(ctx, tables, split, searches, skipped))
        results[space] = control_results(ctx, scores, CONTROLS, space)
        if retriever:
            one_model[space] = control_results(ctx, scores, text_retriever.CONTROLS,
                                               f"{space} vs. {text_retriever.RETRIEVER}", one_sided=True)
    from study.kinds.vlm_dejavu.utility import measure_utility

    utility = measure_utility(ctx, tables)
    ctx.log("measure", "utility: " + ", ".join(f"{k} {v:.3f}" for k, v in utility.items() if isinstance(v, float)))
    storage.write_json(ctx.measure_results, {"spaces": results, "utility": utility, "skipped_no_gt": skipped,
                                             "vocabulary": list(tables.vocab), "headline_key": headline_key(cfg.measure)})
    public_captions = ((read_marker(ctx.stage_dir("embed")) or {}).get("summary", {}).get("sets", {})
                       .get("public_captions"))
    text_retriever.write_results(ctx, one_model if retriever else None, public_captions)
    return {"spaces": list(results), "utility": utility, "one_model": sorted(one_model)}


def headline_k(ks) -> int:
    """The k quoted first: 10 when measured (the paper's middle setting), else the smallest."""
    return 10 if 10 in ks else min(ks)


def headline_key(m) -> str:
    """The entry quoted first: headline k, ``measure.headline_rule``, the objects the caption does
    not name (the memorization signal). Top-n is the default rule because with a small object
    vocabulary the union of ten neighbours' objects holds nearly every object for both models."""
    return f"k={headline_k(m.ks)}/{m.headline_rule}/unnamed"
