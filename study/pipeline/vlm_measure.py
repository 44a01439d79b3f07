"""Stage ``measure`` of the VLM study (DESIGN §2.2): object recovery from a caption.

Per attacked record and model: the objects of its caption's k nearest public images (the union,
and the top-n by neighbour frequency) are scored against the record's objects, all of them and
those its caption does not name. Sides and controls are the frame's (``kinds.CONTROLS``):
positive on each model's own split, null on the holdout. With the text retriever, its nearest
public captions are scored the same way and the one-model test (``text_retriever.CONTROLS``) is
measured beside the two-model test. Utility (``vlm_utility``) is measured beside memorization.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from study import storage
from study.core.objects import (
    ObjectSide,
    PREDICTION_RULES,
    most_memorized,
    named_objects,
    neighbour_votes,
    overlap,
    population_test,
    sample_level,
)
from study.data import records
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.pipeline.context import RunContext, read_marker
from study.pipeline.kinds import CONTROLS, get_kind, side_mask
from study.search.results import check_queries, check_same_queries, iter_results, public_rows

BATCH_ROWS = 65_536  # records or queries per batch
VARIANTS = ("all", "unnamed")  # ground truth: every object, or those the caption does not name


def object_table(ctx: RunContext, ids: list[str]) -> dict[str, tuple[list[str], str]]:
    """id -> (objects, caption) for the given records."""
    table = records.read_records(ctx.data_root, ids, columns=["id", "objects", "caption"])
    return {i: (o or [], c or "") for i, o, c in zip(*(table.column(n).to_pylist() for n in ("id", "objects", "caption")))}


def object_matrix(rows: list[list[str]], vocab: dict[str, int]) -> np.ndarray:
    m = np.zeros((len(rows), len(vocab)), dtype=bool)
    for r, objs in enumerate(rows):
        m[r, [vocab[o] for o in objs if o in vocab]] = True
    return m


def _objects_matrix(objects: pa.Array, vocab: pa.Array) -> np.ndarray:
    """(n, C) bool object sets of a batch, built from Arrow's flattened lists (no Python loop)."""
    lengths = pc.fill_null(pc.list_value_length(objects), 0).to_numpy(zero_copy_only=False)
    cols = pc.index_in(pc.list_flatten(objects), value_set=vocab).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    known = ~np.isnan(cols.astype(float))
    m = np.zeros((len(lengths), len(vocab)), dtype=bool)
    m[rows[known], cols[known].astype(np.int64)] = True
    return m


@dataclass
class ObjectTables:
    """What the measurement needs of each record, from one scan of the records' metadata: the
    public set's object sets as a (n public, C) matrix in ``public`` index rows; the attacked
    records' objects and captions (lists, in ``attacked`` index rows)."""

    vocab: dict[str, int]
    public: IdIndex
    public_objects: np.ndarray
    attacked: IdIndex
    attacked_objects: list
    attacked_captions: list


def _record_batches(ctx: RunContext, batch_rows: int = BATCH_ROWS):
    yield from records.dataset(ctx.data_root).to_batches(columns=["id", "objects", "caption"], batch_size=batch_rows)


def object_tables(ctx: RunContext, attacked: tuple[str, ...]) -> ObjectTables:
    """Two streaming passes over (id, objects, caption): the vocabulary, then the tables."""
    public = IdIndex(b.column("id").to_pylist() for b in iter_split(ctx.splits_dir, "public"))
    att = IdIndex(b.column("id").to_pylist() for s in attacked for b in iter_split(ctx.splits_dir, s))
    names = set()
    for batch in _record_batches(ctx):
        ids = batch.column("id").to_pylist()
        used = (public.rows(ids) >= 0) | (att.rows(ids) >= 0)
        names.update(pc.unique(pc.list_flatten(batch.column("objects").filter(pa.array(used)))).to_pylist())
    names.discard(None)
    vocab_names = sorted(names)
    vocab_arr = pa.array(vocab_names, pa.string())
    public_objects = np.zeros((len(public), len(vocab_names)), dtype=bool)
    att_objects, att_captions = [None] * len(att), [None] * len(att)
    for batch in _record_batches(ctx):
        ids = batch.column("id").to_pylist()
        rows = public.rows(ids)
        hit = rows >= 0
        if hit.any():
            public_objects[rows[hit]] = _objects_matrix(batch.column("objects").filter(pa.array(hit)), vocab_arr)
        rows = att.rows(ids)
        for j in np.flatnonzero(rows >= 0):  # attacked records only: their ground truth, per record
            att_objects[rows[j]] = batch.column("objects")[int(j)].as_py() or []
            att_captions[rows[j]] = batch.column("caption")[int(j)].as_py() or ""
    return ObjectTables({o: j for j, o in enumerate(vocab_names)}, public, public_objects, att, att_objects,
                        att_captions)


def ground_truth(objects: list, captions: list, variant: str, vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(keep (n,) bool: records with ground truth for this variant, gt (kept, C) bool), from the
    queries' objects and captions in query order."""
    rows = objects
    if variant == "unnamed":
        rows = [sorted(set(o) - set(named_objects(c, o))) for o, c in zip(objects, captions)]
    keep = np.array([len(g) > 0 for g in rows], dtype=bool)
    return keep, object_matrix([g for g, k in zip(rows, keep) if k], vocab)


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


def record_scores(I: np.ndarray, public_objects: np.ndarray, gt: np.ndarray, k: int, rule: str, top_n: int) -> dict:
    """Per-record hits, precision, recall, F of one model's predictions at one k."""
    votes = neighbour_votes(public_objects, I, min(k, I.shape[1]))
    return overlap(gt, PREDICTION_RULES[rule](votes, top_n))


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
                    f"[{head['ppg']['ci'][0]:+.3f}, {head['ppg']['ci'][1]:+.3f}] p={head['ppg']['p_value']:.4f}")
    return out


def run_measure(ctx: RunContext) -> dict:
    from study.pipeline import text_retriever

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
    from study.pipeline.vlm_utility import measure_utility

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
