"""Stage ``measure`` of the SSL study: the four runs of DESIGN §2.1 turned into the population test.

Positive control: side a = target split (A is target, B reference), side b = reference split
(roles swapped). Null control: the holdout split, split in two halves by a keyed hash, plays the
same two roles; neither model saw it, so its gap should cover 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study import storage
from study.core.metrics import Side, accuracy_curve, dejavu_test, most_memorized
from study.core.topk import label_votes, predict_from_votes
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.pipeline.context import RunContext
from study.pipeline.kinds import CONTROLS, get_kind, side_mask
from study.search.results import iter_results, neighbour_matrix

BATCH_ROWS = 65_536  # queries per batch of search results


@dataclass(frozen=True)
class Outcomes:
    """One model's k-NN outcomes on one query set, aligned by record and sorted by id (numpy
    columns, not per-record Python objects)."""

    ids: np.ndarray  # (n,) str
    top1: np.ndarray  # (n,) bool
    top5: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,) float64


def split_index(ctx: RunContext, split: str) -> tuple[IdIndex, np.ndarray]:
    """Ids of a split as an ``IdIndex`` and their labels (-1 where missing), in the same rows."""
    labels = []

    def ids():
        for batch in iter_split(ctx.splits_dir, split):
            labels.append(batch.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64))
            yield batch.column("id").to_pylist()

    index = IdIndex(ids())
    return index, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def knn_outcomes(search_uri: str, public: tuple[IdIndex, np.ndarray], truth: tuple[IdIndex, np.ndarray],
                 num_classes: int, batch_rows: int = BATCH_ROWS) -> Outcomes:
    """Top-1/top-5 correctness and confidence per query from its neighbours' labels, read one batch
    of search results at a time."""
    pub_index, pub_labels = public
    truth_index, truth_labels = truth
    parts = []
    for batch in iter_results(search_uri, batch_rows):
        rows = neighbour_matrix(batch.column("neighbor_ids"), pub_index.rows)
        nl = np.where(rows >= 0, pub_labels[np.clip(rows, 0, None)], -1)
        pred, top5, conf = predict_from_votes(label_votes(nl, num_classes), top=5)
        q_ids = np.asarray(batch.column("query_id").to_pylist(), dtype=str)
        t_rows = truth_index.rows(q_ids)
        labels = np.where(t_rows >= 0, truth_labels[np.clip(t_rows, 0, None)], -2)  # -2: never a prediction
        parts.append((q_ids, pred == labels, (top5 == labels[:, None]).any(axis=1), conf))
    if not parts:
        return Outcomes(np.zeros(0, str), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0))
    ids, top1, top5, conf = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(ids, kind="stable")
    return Outcomes(ids[order], top1[order], top5[order], conf[order])


def build_sides(outcomes: dict, control: str, seed: int, metric: str) -> list[Side]:
    """Sides of one control with top-1 (``metric`` "top1") or top-5 ("top5") correctness, over the
    records both models were queried with, in id order."""
    sides = []
    for side_name, split, tgt, ref in CONTROLS[control]:
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


def run_measure(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    m = cfg.measure
    manifest = storage.read_json(ctx.manifest)
    public = split_index(ctx, "public")
    results = {}
    for rep in get_kind(cfg.study).spaces_for(cfg):
        outcomes = {}
        for split in {s for rows in CONTROLS.values() for _, s, _, _ in rows}:
            if cfg.splits.fractions.get(split, 0) <= 0:
                continue
            truth = split_index(ctx, split)
            for model in ("model_a", "model_b"):
                uri = ctx.search_results(model, split, rep)
                outcomes[(model, split)] = knn_outcomes(uri, public, truth, manifest["num_classes"])
        rep_result = {}
        for control in CONTROLS:
            if any(key not in outcomes for key in [(t, s) for _, s, t, _ in CONTROLS[control]]):
                continue
            top1 = build_sides(outcomes, control, cfg.splits.seed, "top1")
            top5 = build_sides(outcomes, control, cfg.splits.seed, "top5")
            args = dict(qs=m.quantiles, bootstrap=m.bootstrap, permutations=m.permutations, level=m.confidence_level, seed=m.seed)
            rep_result[control] = {
                "top1": dejavu_test(top1, **args),
                "top5": dejavu_test(top5, **args),
                "curve": accuracy_curve(top1, m.curve_points),
                "most_memorized": [
                    {**row, "split": CONTROLS[control][row["side"]][1], "target_model": CONTROLS[control][row["side"]][2]}
                    for row in most_memorized(top1, cfg.report.gallery_size)
                ],
            }
            gap = max(rep_result[control]["top1"]["by_q"], key=lambda e: e["q"])["gap"]
            ctx.log("measure", f"{rep:<9} {control:<8} gap@q=1 {gap['value']:+.3f} "
                    f"[{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] p={gap['p_value']:.4f}")
        results[rep] = rep_result
    storage.write_json(ctx.measure_results, results)
    return {"representations": list(results)}
