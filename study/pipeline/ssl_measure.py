"""Stage ``measure`` of the SSL study: the four runs of DESIGN §2.1 turned into the population test.

Positive control: side a = target split (A is target, B reference), side b = reference split
(roles swapped). Null control: the holdout split, split in two halves by a keyed hash, plays the
same two roles; neither model saw it, so its gap should cover 0.
"""
from __future__ import annotations

import numpy as np

from study import storage
from study.core.metrics import Side, accuracy_curve, dejavu_test, most_memorized
from study.core.topk import label_votes, predict_from_votes
from study.data.loading import read_split
from study.pipeline.context import RunContext
from study.pipeline.kinds import CONTROLS, get_kind, side_ids
from study.pipeline.neighbours import read_results



def knn_outcomes(search_uri: str, public_labels: dict, true_labels: dict, num_classes: int) -> dict:
    """Per query id: (top-1 correct, top-5 correct, confidence, prediction) from its neighbours."""
    q_ids, nbrs = read_results(search_uri)
    k = max((len(n) for n in nbrs), default=0)
    nl = np.full((len(q_ids), k), -1, dtype=np.int64)
    for r, row in enumerate(nbrs):
        nl[r, : len(row)] = [public_labels.get(n, -1) if n is not None else -1 for n in row]
    pred, top5, conf = predict_from_votes(label_votes(nl, num_classes), top=5)
    truth = np.array([true_labels[q] for q in q_ids], dtype=np.int64)
    top1_ok = pred == truth
    top5_ok = (top5 == truth[:, None]).any(axis=1)
    return {q: (bool(a), bool(b), float(c), int(p)) for q, a, b, c, p in zip(q_ids, top1_ok, top5_ok, conf, pred)}


def build_sides(outcomes: dict, control: str, seed: int, metric_index: int) -> list[Side]:
    """Sides of one control with top-1 (metric_index 0) or top-5 (1) correctness."""
    sides = []
    for side_name, split, tgt, ref in CONTROLS[control]:
        t_out, r_out = outcomes[(tgt, split)], outcomes[(ref, split)]
        ids = side_ids(sorted(set(t_out) & set(r_out)), control, side_name, seed)
        sides.append(
            Side(
                ids=np.asarray(ids, dtype=object),
                target_correct=np.array([t_out[i][metric_index] for i in ids], dtype=bool),
                target_confidence=np.array([t_out[i][2] for i in ids]),
                reference_correct=np.array([r_out[i][metric_index] for i in ids], dtype=bool),
                reference_confidence=np.array([r_out[i][2] for i in ids]),
            )
        )
    return sides


def run_measure(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    m = cfg.measure
    manifest = storage.read_json(ctx.manifest)
    pub_ids, pub_labels = read_split(ctx.splits_dir, "public")
    public_labels = dict(zip(pub_ids, pub_labels.tolist()))
    results = {}
    for rep in get_kind(cfg.study).spaces_for(cfg):
        outcomes = {}
        for split in {s for rows in CONTROLS.values() for _, s, _, _ in rows}:
            if cfg.splits.fractions.get(split, 0) <= 0:
                continue
            ids, labels = read_split(ctx.splits_dir, split)
            truth = dict(zip(ids, labels.tolist()))
            for model in ("model_a", "model_b"):
                uri = ctx.search_results(model, split, rep)
                outcomes[(model, split)] = knn_outcomes(uri, public_labels, truth, manifest["num_classes"])
        rep_result = {}
        for control in CONTROLS:
            if any(key not in outcomes for key in [(t, s) for _, s, t, _ in CONTROLS[control]]):
                continue
            top1 = build_sides(outcomes, control, cfg.splits.seed, 0)
            top5 = build_sides(outcomes, control, cfg.splits.seed, 1)
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
