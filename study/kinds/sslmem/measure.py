"""Stage ``measure`` of the SSLMem study: alignments -> per-record scores and population tests.

Reads each model's alignment of every scored record (the embed stage's ``align-<space>`` views),
writes every record's scores to ``measure/sslmem_scores.parquet`` (id, set, per space: align_f,
align_g, score, normalised), and per space and score kind (raw, normalised) the sets'
distributions, the candidates' test against the independent set and the never-trained extra set,
and the most memorized candidates (``measure/results.json``).

Everything per record happens in Ray tasks (``scores``): one task per set scores its records and
writes them to ``measure/scores/<set>.parquet``, one joins those files, and per space and score
kind one task computes what needs no draw and up to one task per CPU a range of the bootstrap and
permutation draws. The driver holds counts and aggregates.
"""
from __future__ import annotations

import ray

from study import storage
from study.frame.context import RunContext
from study.kinds.sslmem.scores import SETS, assemble, draws, join_sets, observed, score_set
from study.report.pvalues import p_is
from study.stages.measure_tasks import cpus, draw_pieces, rank_and_draw

SCORES_FILE = "sslmem_scores.parquet"
KINDS = ("raw", "normalised")
RANGE = "range"  # with sslmem.range_normalised: the published normalisation


def kinds(cfg) -> tuple[str, ...]:
    return KINDS + ((RANGE,) if cfg.sslmem.range_normalised else ())


def run_measure(ctx: RunContext) -> dict:
    cfg, m = ctx.cfg, ctx.cfg.measure
    scored = [s for s in SETS if ctx.uses(s)]
    spaces = cfg.sslmem.spaces()
    task = ray.remote(num_cpus=1)
    counts = dict(zip(scored, ray.get([task(score_set).remote(ctx, s, spaces) for s in scored])))
    joined = task(join_sets).remote(ctx, scored, ctx.stage_dir("measure", SCORES_FILE))
    groups = {(space, kind): ((ctx, scored, space, kind), (), ()) for space in spaces for kind in kinds(cfg)}
    got = rank_and_draw(groups, observed, draws, draw_pieces(m.bootstrap, m.permutations, cpus()))
    empty = [SETS[s] for s in scored if not counts[s]]
    results = {}
    for space in spaces:
        if empty:
            ctx.log("measure", f"{space}: no scored records in {', '.join(empty)}")
        results[space] = {kind: assemble(*got[(space, kind)], m.confidence_level, cfg.sslmem.high_quantile)
                          for kind in kinds(cfg)}
        results[space]["most_memorized"] = got[(space, "raw")][0].get("most_memorized", [])
        for control, t in results[space]["raw"]["tests"].items():
            d = t["mean_difference"]
            ctx.log("measure", f"{space:<9} candidates - {control}: mean score {d['value']:+.4f} "
                    f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] {p_is(d, sep='=')}, AUC {t['auc']['value']:.3f}, "
                    f"highly memorized {t['high_share']['value']:.1%} (expected {t['high_share']['expected']:.0%})")
    ray.get(joined)
    storage.write_json(ctx.measure_results, results)
    return {"spaces": list(results), "scored": {SETS[s]: counts[s] for s in scored}}
