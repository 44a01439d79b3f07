"""The VLM test's entries (one per k, prediction rule and ground-truth variant of a control) from
the per-record outcome files, in pieces that Ray tasks compute (the measure stage) and the driver
assembles: the driver receives per-side aggregates only.

* ``ranking``: each entry's side sizes, sample-level gaps and most-memorized records (every record
  of the control's sides, ranked by hits gap in one task);
* ``draws``: each entry's bootstrap and swap draws over one range of draw numbers, per side
  (draws are keyed by number, so any split of the ranges gives the same numbers);
* ``assemble``: the entry from its ranking and its draw pieces.

``local`` composes the three in one process: what the tasks compute together, for tests and
small inputs.
"""
from __future__ import annotations

from typing import Sequence

from study.core.object_sets import PREDICTION_RULES
from study.core.objects import ObjectSide, SideDraws, most_memorized, population_summary, sample_level, side_draws
from study.frame.kinds import side_mask
from study.kinds.vlm_dejavu.outcomes import Outcomes
from study.search.results import check_same_queries

BINS = 100  # recall-curve grid points - 1


def entry_keys(ks) -> list[tuple[int, str]]:
    """Every (k, rule) of a control and variant, in the order the entries are written."""
    return [(k, rule) for k in ks for rule in PREDICTION_RULES]


def read_sides(where: dict, rows: Sequence[tuple]) -> dict:
    """{(model, split): Outcomes} of every model of the sides ``rows``, each read once; the two
    models of a side must have been queried with the same records."""
    read = {mk: Outcomes(where[mk][0]) for mk in {(m, split) for _, split, *ms in rows for m in ms}}
    for _, split, tgt, ref in rows:
        check_same_queries({tgt: read[(tgt, split)].ids, ref: read[(ref, split)].ids},
                           {tgt: where[(tgt, split)][1], ref: where[(ref, split)][1]})
    return read


def load_sides(read: dict, rows: Sequence[tuple], control: str, variant: str, key: tuple, seed: int) -> list:
    """[ObjectSide per row of ``rows`` ((side, split, target, reference))] of one control, variant
    and (k, rule) ``key``, from the outcomes ``read`` (``read_sides``): a task makes one entry's
    sides at a time."""
    sides = []
    for side_name, split, tgt, ref in rows:
        target = read[(tgt, split)]
        t_ids, t = target.entry(variant, key)
        _, r = read[(ref, split)].entry(variant, key)  # the same records in the same (id) order
        sel = side_mask(t_ids, control, side_name, seed, unit=lambda: target.side_unit(seed, variant))
        sides.append(ObjectSide(
            ids=t_ids[sel], target_precision=t["precision"][sel], target_recall=t["recall"][sel],
            target_hits=t["hits"][sel], reference_precision=r["precision"][sel],
            reference_recall=r["recall"][sel], reference_hits=r["hits"][sel]))
    return sides


def ranking(where: dict, rows: Sequence[tuple], control: str, variant: str, ks, seed: int,
            fractions: Sequence[float], gallery_size: int) -> dict:
    """{(k, rule): {"n", "sample_level", "most_memorized"}} of one control and variant."""
    out, read = {}, read_sides(where, rows)
    for key in entry_keys(ks):
        sides = load_sides(read, rows, control, variant, key, seed)
        n = [len(s) for s in sides]
        out[key] = {"n": n, "sample_level": sample_level(sides, fractions) if sum(n) else [],
                    "most_memorized": [
                        {**r, "split": rows[r["side"]][1], "target_model": rows[r["side"]][2],
                         "reference_model": rows[r["side"]][3]}
                        for r in most_memorized(sides, gallery_size)]}
    return out


def draws(where: dict, rows: Sequence[tuple], control: str, variant: str, ks, seed: int, draw_seed: int,
          boot: range, swaps: range) -> dict:
    """{(k, rule): [SideDraws over these draws, or None for an empty side, per row]}."""
    out, read = {}, read_sides(where, rows)
    for key in entry_keys(ks):
        sides = load_sides(read, rows, control, variant, key, seed)
        out[key] = [side_draws(s, i, draw_seed, boot, swaps, BINS) if len(s) else None for i, s in enumerate(sides)]
    return out


def assemble(key: tuple, variant: str, ranked: dict, pieces: Sequence[dict], m) -> dict | None:
    """The entry of (k, rule) and a variant from its ranking and its draw pieces (in draw order);
    None when its sides hold no record."""
    k, rule = key
    n = ranked[key]["n"]
    if sum(n) == 0:
        return None
    present = [SideDraws.stack([p[key][i] for p in pieces]) for i, size in enumerate(n) if size]
    return {"k": k, "rule": rule, "variant": variant,
            **population_summary(n, present, m.permutations, m.confidence_level, BINS),
            "sample_level": ranked[key]["sample_level"], "most_memorized": ranked[key]["most_memorized"]}


def local(where: dict, rows: Sequence[tuple], control: str, variants: Sequence[str], m, seed: int,
          gallery_size: int) -> dict:
    """{"k=../rule/variant": entry} of one control in this process (one piece of draws)."""
    entries = {}
    for variant in variants:
        ranked = ranking(where, rows, control, variant, m.ks, seed, m.top_fractions, gallery_size)
        piece = draws(where, rows, control, variant, m.ks, seed, m.seed, range(m.bootstrap), range(m.permutations))
        for key in ranked:
            entry = assemble(key, variant, ranked, [piece], m)
            if entry is not None:
                entries[f"k={key[0]}/{key[1]}/{variant}"] = entry
    return entries
