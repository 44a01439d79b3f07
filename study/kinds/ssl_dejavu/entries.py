"""The SSL test's results of one control (top-1 and top-5 tests, the accuracy curve, the most
memorized records) from the per-record outcome files, in pieces that Ray tasks compute (the
measure stage) and the driver assembles: the driver receives per-side aggregates only.

* ``ranking``: the side sizes, the accuracy curve and the most memorized records (every record of
  the control's sides, in one task);
* ``draws``: each side's bootstrap and swap draws over one range of draw numbers, for top-1 and
  top-5 correctness (draws are keyed by number, so any split of the ranges gives the same numbers);
* ``assemble``: the control's results from its ranking and its draw pieces.

``local`` composes the three in one process: what the tasks compute together, for tests and
small inputs. ``where`` maps (model, split) to the outcome directory of that model (or predictor)
on that split and its search results (None for a predictor).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from study.core.accuracy_draws import TopFractions
from study.core.metrics import AccuracyDraws, Side, accuracy_curve, accuracy_summary, most_memorized, side_draws
from study.frame.kinds import side_mask
from study.kinds.ssl_dejavu.outcomes import Outcomes
from study.search.results import check_same_queries

METRICS = ("top1", "top5")


def read_sides(where: dict, rows: Sequence[tuple]) -> dict:
    """{(model, split): Outcomes} of every model of the sides ``rows``, each read once; the two
    models of a side must have been queried with the same records (a predictor, which has no
    search results, scores the labelled records it can)."""
    read = {mk: Outcomes.read(where[mk][0]) for mk in {(m, split) for _, split, *ms in rows for m in ms}}
    for _, split, tgt, ref in rows:
        uris = {tgt: where[(tgt, split)][1], ref: where[(ref, split)][1]}
        if None not in uris.values():
            check_same_queries({tgt: read[(tgt, split)].ids, ref: read[(ref, split)].ids}, uris)
    return read


def matched(read: dict, rows: Sequence[tuple], control: str, seed: int):
    """Per side of one control: (its target's and reference's outcomes, their rows of the side's
    records, the records' ids): the records both were queried with (a predictor may score
    fewer), in id order, halved as the control says."""
    for side_name, split, tgt, ref in rows:
        t, r = read[(tgt, split)], read[(ref, split)]
        common = np.intersect1d(t.ids, r.ids, assume_unique=True)
        ti, ri = np.searchsorted(t.ids, common), np.searchsorted(r.ids, common)
        keep = side_mask(common, control, side_name, seed)
        yield t, r, ti[keep], ri[keep], common[keep]


def build_sides(read: dict, rows: Sequence[tuple], control: str, seed: int) -> dict[str, list[Side]]:
    """{metric: sides of one control} with top-1 ("top1") or top-5 ("top5") correctness (``matched``);
    each side's records are matched and halved once for both metrics."""
    sides: dict = {metric: [] for metric in METRICS}
    for t, r, ti, ri, ids in matched(read, rows, control, seed):
        for metric in METRICS:
            sides[metric].append(Side(
                ids=ids,
                target_correct=getattr(t, metric)[ti], target_confidence=t.confidence[ti],
                reference_correct=getattr(r, metric)[ri], reference_confidence=r.confidence[ri],
            ))
    return sides


def per_class(read: dict, rows: Sequence[tuple], control: str, seed: int) -> list[dict]:
    """Top-1 accuracy per foreground class, target against reference, over the control's sides
    (each side's target and reference, summed): [{"label", "records", "target", "reference"}]
    by label, the records of a known label only."""
    labels, right_t, right_r = [], [], []
    for t, r, ti, ri, _ in matched(read, rows, control, seed):
        labels.append(t.label[ti])
        right_t.append(t.top1[ti])
        right_r.append(r.top1[ri])
    if not labels:
        return []
    label, rt, rr = (np.concatenate(a) for a in (labels, right_t, right_r))
    known = label >= 0
    label, rt, rr = label[known], rt[known], rr[known]
    out = []
    for c in np.unique(label):
        at = label == c
        out.append({"label": int(c), "records": int(at.sum()), "target": float(rt[at].mean()),
                    "reference": float(rr[at].mean())})
    return out


def ranking(where: dict, rows: Sequence[tuple], control: str, seed: int, curve_points: int, gallery_size: int) -> dict:
    """{"n": side sizes, "curve", "most_memorized", "per_class"} of one control (top-1 correctness)."""
    read = read_sides(where, rows)
    sides = build_sides(read, rows, control, seed)["top1"]
    n = [len(s) for s in sides]
    return {"n": n, "per_class": per_class(read, rows, control, seed),
            "curve": accuracy_curve(sides, curve_points) if sum(n) else None,
            "most_memorized": [{**row, "split": rows[row["side"]][1], "target_model": rows[row["side"]][2]}
                               for row in most_memorized(sides, gallery_size)]}


def draws(where: dict, rows: Sequence[tuple], control: str, seed: int, qs: Sequence[float], draw_seed: int,
          boot: range, swaps: range) -> dict:
    """{metric: [AccuracyDraws over these draws, or None for an empty side, per row]}."""
    by_metric = build_sides(read_sides(where, rows), rows, control, seed)
    return {metric: [side_draws(s, i, qs, draw_seed, boot, swaps) if len(s) else None for i, s in enumerate(sides)]
            for metric, sides in by_metric.items()}


def assemble(ranked: dict, pieces: Sequence[dict], m) -> dict | None:
    """The control's results from its ranking and its draw pieces (in draw order); None when its
    sides hold no record."""
    if not sum(ranked["n"]):
        return None
    out = {}
    for metric in METRICS:
        present = [AccuracyDraws.stack([p[metric][i] for p in pieces]) for i, size in enumerate(ranked["n"]) if size]
        out[metric] = accuracy_summary(present, m.quantiles, m.permutations, m.confidence_level)
    return {**out, "curve": ranked["curve"], "most_memorized": ranked["most_memorized"],
            "per_class": ranked.get("per_class", [])}


def local(where: dict, rows: Sequence[tuple], control: str, m, seed: int, gallery_size: int) -> dict | None:
    """One control's results in this process (one piece of draws)."""
    ranked = ranking(where, rows, control, seed, m.curve_points, gallery_size)
    piece = draws(where, rows, control, seed, TopFractions(m.quantiles, m.top_q_size), m.seed, range(m.bootstrap),
                  range(m.permutations))
    return assemble(ranked, [piece], m)
