"""Stage ``measure`` of the SSL study: the four runs (docs/concepts/ssl-dejavu.md) turned into the population test.

Positive control: side a = target split (A is target, B reference), side b = reference split
(roles swapped). Null control: the holdout split, split in two halves by a keyed hash, plays the
same two roles; neither model saw it, so its gap should cover 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.report.pvalues import p_is
from study import storage
from study.core.metrics import Side, accuracy_curve, dejavu_test, most_memorized
from study.core.topk import label_votes, predict_from_votes
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.frame.context import RunContext
from study.frame.kinds import CONTROLS, get_kind, side_mask
from study.kinds.ssl_dejavu.one_model import predictors
from study.stages.measure import ONE_MODEL_CONTROLS, PREDICTOR, write_one_model
from study.kinds.ssl_dejavu.utility import measure_utility
from study.search.results import check_queries, check_same_queries, iter_results, public_rows

BATCH_ROWS = 65_536  # queries per batch of search results


@dataclass(frozen=True)
class Outcomes:
    """One model's k-NN outcomes on one query set, aligned by record and sorted by id (numpy
    columns, not per-record Python objects)."""

    ids: np.ndarray  # (n,) str
    top1: np.ndarray  # (n,) bool
    top5: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,) float64
    neighbours: int = 0  # public neighbours read
    unlabelled_neighbours: int = 0  # of them, records without a label: no vote
    unlabelled_queries: int = 0  # queries without a label: no ground truth, left out


def split_index(ctx: RunContext, split: str) -> tuple[IdIndex, np.ndarray]:
    """Ids of a split as an ``IdIndex`` and their labels (-1 where missing), in the same rows."""
    labels = []

    def ids():
        for batch in iter_split(ctx.splits_dir, split):
            labels.append(batch.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64))
            yield batch.column("id")

    index = IdIndex(ids())
    return index, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def knn_outcomes(search_uri: str, public: tuple[IdIndex, np.ndarray], truth: tuple[IdIndex, np.ndarray],
                 num_classes: int, batch_rows: int = BATCH_ROWS) -> Outcomes:
    """Top-1/top-5 correctness and confidence per query from its neighbours' labels, read one batch
    of search results at a time. Neighbours and queries must be records of the public and the
    attacked split (a StudyError otherwise); those without a label are counted: a neighbour
    without one casts no vote, a query without one is left out."""
    pub_index, pub_labels = public
    truth_index, truth_labels = truth
    parts, neighbours, unlabelled, no_truth = [], 0, 0, 0
    for batch in iter_results(search_uri, batch_rows):
        rows = public_rows(batch.column("neighbor_ids"), pub_index, search_uri)
        nl = np.where(rows >= 0, pub_labels[np.clip(rows, 0, None)], -1)
        neighbours += int((rows >= 0).sum())
        unlabelled += int(((rows >= 0) & (nl < 0)).sum())
        pred, top5, conf = predict_from_votes(label_votes(nl, num_classes), top=5)
        q_ids = np.asarray(batch.column("query_id").to_pylist(), dtype=str)
        t_rows = truth_index.rows(q_ids)
        check_queries(q_ids, t_rows, search_uri)
        labels = truth_labels[t_rows]
        keep = labels >= 0  # an unlabelled query would count as right when no neighbour votes (-1 == -1)
        no_truth += int((~keep).sum())
        parts.append((q_ids[keep], (pred == labels)[keep], (top5 == labels[:, None]).any(axis=1)[keep], conf[keep]))
    counts = dict(neighbours=neighbours, unlabelled_neighbours=unlabelled, unlabelled_queries=no_truth)
    if not parts:
        return Outcomes(np.zeros(0, str), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0), **counts)
    ids, top1, top5, conf = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(ids, kind="stable")
    return Outcomes(ids[order], top1[order], top5[order], conf[order], **counts)


def dropped_counts(outcomes) -> dict[str, int]:
    """Neighbours read, and neighbours and queries without a label, summed over ``Outcomes``."""
    keys = ("neighbours", "unlabelled_neighbours", "unlabelled_queries")
    return {key: sum(getattr(o, key) for o in outcomes) for key in keys}


def build_sides(outcomes: dict, control: str, seed: int, metric: str, controls: dict = CONTROLS) -> list[Side]:
    """Sides of one control with top-1 (``metric`` "top1") or top-5 ("top5") correctness, over the
    records both models were queried with, in id order."""
    sides = []
    for side_name, split, tgt, ref in controls[control]:
        t, r = outcomes[(tgt, split)], outcomes[(ref, split)]
        common = np.intersect1d(t.ids, r.ids, assume_unique=True)
        ti, ri = np.searchsorted(t.ids, common), np.searchsorted(r.ids, common)
        keep = side_mask(common, control, side_name, seed)
        ti, ri = ti[keep], ri[keep]
        sides.append(Side(
            ids=common[keep],
            target_correct=getattr(t, metric)[ti], target_confidence=t.confidence[ti],
            reference_correct=getattr(r, metric)[ri], reference_confidence=r.confidence[ri],
        ))
    return sides


def control_results(ctx: RunContext, outcomes: dict, controls: dict, label: str, one_sided: bool = False) -> dict:
    """{control: results} of one representation's outcomes over the ``controls`` whose outcomes are
    all there (the two-model test's), or with ``one_sided`` over the sides whose outcomes are there
    (the one-model test's, the predictor as reference: model A alone has one side)."""
    cfg, m = ctx.cfg, ctx.cfg.measure
    out = {}
    for control, rows in controls.items():
        have = [row for row in rows if (row[2], row[1]) in outcomes and (row[3], row[1]) in outcomes]
        if len(have) < len(rows) and not (one_sided and have):
            continue
        rows = have
        top1 = build_sides(outcomes, control, cfg.splits.seed, "top1", {control: rows})
        top5 = build_sides(outcomes, control, cfg.splits.seed, "top5", {control: rows})
        args = dict(qs=m.quantiles, bootstrap=m.bootstrap, permutations=m.permutations, level=m.confidence_level, seed=m.seed)
        out[control] = {
            "top1": dejavu_test(top1, **args),
            "top5": dejavu_test(top5, **args),
            "curve": accuracy_curve(top1, m.curve_points),
            "most_memorized": [
                {**row, "split": rows[row["side"]][1], "target_model": rows[row["side"]][2]}
                for row in most_memorized(top1, cfg.report.gallery_size)
            ],
        }
        gap = max(out[control]["top1"]["by_q"], key=lambda e: e["q"])["gap"]
        ctx.log("measure", f"{label:<9} {control:<8} gap@q=1 {gap['value']:+.3f} "
                f"[{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] {p_is(gap, sep='=')}")
    return out


def run_measure(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    manifest = storage.read_json(ctx.manifest)
    public = split_index(ctx, "public")
    attacked = sorted({s for rows in CONTROLS.values() for _, s, _, _ in rows if cfg.splits.uses(s)})
    predicted = predictors(ctx, attacked, manifest["num_classes"], Outcomes)
    results, one_model, dropped = {}, {name: {} for name in predicted}, {}
    for rep in get_kind(cfg.study).spaces_for(cfg):
        outcomes = {}
        for split in attacked:
            truth = split_index(ctx, split)
            uris = {model: ctx.search_results(model, split, rep) for model in get_kind(cfg.study).models_for(cfg)}
            for model, uri in uris.items():
                outcomes[(model, split)] = knn_outcomes(uri, public, truth, manifest["num_classes"])
            check_same_queries({model: outcomes[(model, split)].ids for model in uris}, uris)
        dropped[rep] = dropped_counts(outcomes.values())
        if dropped[rep]["unlabelled_neighbours"] or dropped[rep]["unlabelled_queries"]:
            ctx.log("measure", f"{rep}: {dropped[rep]['unlabelled_neighbours']} of {dropped[rep]['neighbours']} "
                    f"neighbours have no label (no vote); {dropped[rep]['unlabelled_queries']} queries without "
                    "a label left out")
        results[rep] = control_results(ctx, outcomes, CONTROLS, rep)
        for name, by_split in predicted.items():
            with_predictor = {**outcomes, **{(PREDICTOR, split): o for split, o in by_split.items()}}
            one_model[name][rep] = control_results(ctx, with_predictor, ONE_MODEL_CONTROLS, f"{rep} vs. {name}",
                                                   one_sided=True)
    storage.write_json(ctx.measure_results, results)
    write_one_model(ctx, {"tagger": cfg.measure.one_model_tagger, "predictors": one_model} if predicted else
                    {"note": "no predictor: measure.one_model_tagger is off or no public record has a tag, and "
                             "train.crop_classifier is off"})
    utility = measure_utility(ctx, get_kind(cfg.study).models_for(cfg))
    for rep, per_model in utility.get("linear_probe", {}).items():
        ctx.log("measure", f"{rep:<9} linear probe " + ", ".join(
            f"{m} {a['value']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]" for m, a in per_model.items())
            + f" (chance {utility['chance']:.3f})")
    return {"representations": list(results), "dropped": dropped, "utility": utility, "one_model": sorted(predicted)}
