"""The VLM test's entries (one per k, prediction rule and ground-truth variant of a control) from
the per-record outcome files, in pieces that Ray tasks compute (the measure stage) and the driver
assembles: the driver receives per-side aggregates only.

The records are held in id-range blocks (``outcome_files.id_blocks``: one block, every record,
unless the study has more than ``measure.records_per_task`` of them), and each task reads one
block, so a task's memory is set by the block, not by the study:

* ``summaries`` (per block): each entry's side sizes, its histogram of scores per sample-level
  ranking (``sample_level``) and its most-memorized records;
* ``plan`` (driver, from every block's summaries): each block's first position in each side and
  its share of the sample-level cuts (a distributed top-k: the cut's threshold from the added
  histograms, the ties at it by id);
* ``draws`` (per block and range of draw numbers): each entry's bootstrap and swap sums over the
  block's records, per side (draws are keyed by number and resample the whole side, so any split
  of the ranges or the records gives the same numbers), and its sample-level sums;
* ``assemble``: the entry from the blocks' summaries and draws.

``local`` composes them in one process: what the tasks compute together, for tests and small
inputs.
"""
from __future__ import annotations

from typing import Sequence

from study.core.object_sets import PREDICTION_RULES
from study.core.object_draws import SideDraws, entries_draws, population_summary
from study.core.objects import ObjectSide, merge_most_memorized, most_memorized
from study.core.sample_level import SampleLevel, block_takes, sample_cuts, sample_rows, sample_sums, score_counts
from study.frame.kinds import side_mask
from study.kinds.vlm_dejavu.outcomes import Outcomes
from study.search.results import check_same_queries
from study.stages.outcome_files import WHOLE

BINS = 100  # recall-curve grid points - 1


def entry_keys(ks) -> list[tuple[int, str]]:
    """Every (k, rule) of a control and variant, in the order the entries are written."""
    return [(k, rule) for k in ks for rule in PREDICTION_RULES]


def read_sides(where: dict, rows: Sequence[tuple], block: tuple = WHOLE) -> dict:
    """{(model, split): Outcomes} of the records in the id range ``block`` of every model of the
    sides ``rows``, each read once; the two models of a side must have been queried with the same
    records."""
    read = {mk: Outcomes(where[mk][0], block) for mk in {(m, split) for _, split, *ms in rows for m in ms}}
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
            reference_recall=r["recall"][sel], reference_hits=r["hits"][sel],
            target_nearest=t["nearest"][sel]))
    return sides


def summaries(where: dict, rows: Sequence[tuple], control: str, variant: str, ks, seed: int, sample: SampleLevel,
              block: tuple, gallery_size: int, limit: int | None = None) -> dict:
    """{(k, rule): {"n", "ranked", "counts", "most_memorized"}} of one control and variant over one
    block: the block's side sizes, the records the sample level ranks, its {score: records} per
    ranking (with ``limit``, those that can make a cut below the whole, ``SampleLevel.limit``)
    and its most memorized records."""
    out, read = {}, read_sides(where, rows, block)
    for key in entry_keys(ks):
        sides = load_sides(read, rows, control, variant, key, seed)
        ranked = sample.ranked(sides)
        out[key] = {"n": [len(s) for s in sides], "ranked": sum(len(s) for s in ranked),
                    "counts": {r: score_counts(ranked, r, limit) for r in sample.rankings},
                    "most_memorized": [
                        {**r, "split": rows[r["side"]][1], "target_model": rows[r["side"]][2],
                         "reference_model": rows[r["side"]][3]}
                        for r in most_memorized(sides, gallery_size)]}
    return out


def _added_counts(blocks: Sequence[dict], key: tuple, ranking: str) -> dict:
    counts: dict = {}
    for b in blocks:
        for score, c in b[key]["counts"][ranking].items():
            counts[score] = counts.get(score, 0) + c
    return counts


def _cuts(blocks: Sequence[dict], key: tuple, ranking: str, sample: SampleLevel) -> list:
    return sample_cuts(_added_counts(blocks, key, ranking), sum(b[key]["ranked"] for b in blocks), sample)


def plan(blocks: Sequence[dict], sample: SampleLevel) -> list[dict]:
    """Per block (``summaries`` of every block, in id order): {(k, rule): {"total": side sizes,
    "offset": the block's first position in each side, "takes": {ranking: its share of the
    sample-level cuts}, None for an entry that ranks no record}}."""
    out: list[dict] = [{} for _ in blocks]
    for key in blocks[0]:
        sizes = [b[key]["n"] for b in blocks]
        total = [sum(col) for col in zip(*sizes)]
        takes: list = [None] * len(blocks)
        if sum(b[key]["ranked"] for b in blocks):
            per = {r: block_takes([b[key]["counts"][r] for b in blocks], _cuts(blocks, key, r, sample))
                   for r in sample.rankings}
            takes = [{r: per[r][j] for r in sample.rankings} for j in range(len(blocks))]
        for j in range(len(blocks)):
            offset = [sum(s[i] for s in sizes[:j]) for i in range(len(total))]
            out[j][key] = {"total": total, "offset": offset, "takes": takes[j]}
    return out


def draws(where: dict, rows: Sequence[tuple], control: str, variant: str, ks, seed: int, sample: SampleLevel,
          draw_seed: int, block: tuple, plans: dict, boot: range, swaps: range, first: bool) -> dict:
    """{(k, rule): {"sides": [SideDraws of the block's records over these draws, or None where
    it has none, per row], "sample": {ranking: the block's sample-level sums} (the ``first``
    piece) or None}}. A side's records are the same under every (k, rule) of a variant, so each
    draw's counts are made once for all of them (``entries_draws``)."""
    read, keys = read_sides(where, rows, block), entry_keys(ks)
    sides = {key: load_sides(read, rows, control, variant, key, seed) for key in keys}
    out = {key: {"sides": [], "sample": {r: sample_sums(sample.ranked(sides[key]), r, plans[key]["takes"][r])
                                         for r in sample.rankings}
                 if first and plans[key]["takes"] is not None else None} for key in keys}
    for i in range(len(rows)):
        p = plans[keys[0]]
        got = entries_draws([sides[key][i] for key in keys], i, draw_seed, boot, swaps, BINS, p["total"][i],
                            p["offset"][i]) if len(sides[keys[0]][i]) else [None] * len(keys)
        for key, drawn in zip(keys, got):
            out[key]["sides"].append(drawn)
    return out


def assemble(key: tuple, variant: str, blocks: Sequence[dict], drawn: Sequence[Sequence[dict]], m, gallery_size: int,
             sample: SampleLevel) -> dict | None:
    """The entry of (k, rule) and a variant from every block's summaries and draw pieces (blocks
    in id order, pieces in draw order, the first with the sample-level sums); None when its sides
    hold no record."""
    k, rule = key
    n = [sum(col) for col in zip(*(b[key]["n"] for b in blocks))]
    if sum(n) == 0:
        return None
    present = [SideDraws.add([SideDraws.stack([p[key]["sides"][i] for p in pieces])
                              for pieces in drawn if pieces[0][key]["sides"][i] is not None])
               for i, size in enumerate(n) if size]
    rows = []
    if sum(b[key]["ranked"] for b in blocks):
        for r in sample.rankings:
            sums = [pieces[0][key]["sample"][r] for pieces in drawn if pieces[0][key]["sample"] is not None]
            rows += sample_rows(sample, r, _cuts(blocks, key, r, sample), sums)
    return {"k": k, "rule": rule, "variant": variant,
            **population_summary(n, present, m.permutations, m.confidence_level, BINS),
            "sample_level": rows,
            "most_memorized": merge_most_memorized([b[key]["most_memorized"] for b in blocks], gallery_size)}


def sample_plan(m) -> SampleLevel:
    """The sample level a measure config asks for."""
    return SampleLevel(tuple(m.top_fractions), tuple(m.sample_rankings), m.top_q_size, m.sample_sides, m.sample_f)


def local(where: dict, rows: Sequence[tuple], control: str, variants: Sequence[str], m, seed: int,
          gallery_size: int, blocks: Sequence[tuple] = (WHOLE,)) -> dict:
    """{"k=../rule/variant": entry} of one control in this process (one piece of draws a block)."""
    entries, sample = {}, sample_plan(m)
    for variant in variants:
        summed = [summaries(where, rows, control, variant, m.ks, seed, sample, b, gallery_size) for b in blocks]
        plans = plan(summed, sample)
        drawn = [[draws(where, rows, control, variant, m.ks, seed, sample, m.seed, b, plans[j], range(m.bootstrap),
                        range(m.permutations), True)] for j, b in enumerate(blocks)]
        for key in summed[0]:
            entry = assemble(key, variant, summed, drawn, m, gallery_size, sample)
            if entry is not None:
                entries[f"k={key[0]}/{key[1]}/{variant}"] = entry
    return entries
