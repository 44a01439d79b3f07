"""Stage ``measure`` of the VLM study (docs/concepts/vlm-dejavu.md): object recovery from a caption.

Per attacked record and model: the objects of its caption's k nearest public images (the union,
and the top-n by neighbour frequency) are scored against the record's objects, all of them and
those its caption does not name. Sides and controls are the frame's (``kinds.CONTROLS``):
positive on each model's own split, null on the holdout. With the text retriever, its nearest
public captions are scored the same way and the one-model test (``text_retriever.CONTROLS``) is
measured beside the two-model test. Utility (``vlm_utility``) is measured beside memorization.
"""
from __future__ import annotations

import ray

from study.report.pvalues import p_is
from study import storage
from study.frame.context import RunContext, read_marker
from study.frame.kinds import CONTROLS, get_kind
from study.kinds.vlm_dejavu import entries, outcomes
from study.kinds.vlm_dejavu.objects import object_tables
from study.kinds.vlm_dejavu.utility import utility_rows
from study.search import results

IN_FLIGHT_PER_CPU = 2  # scoring tasks submitted per CPU of the cluster at a time
DRAWS_PER_TASK = 250  # the fewest bootstrap or swap draws a statistics task is given
PROGRESS_PARTS = 20  # with this many parts or more, progress is logged every tenth of them


def _cpus() -> int:
    """The cluster's CPUs, which size the task windows and the draw pieces."""
    return int(ray.cluster_resources().get("CPU", 1))


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
    window = max(1, IN_FLIGHT_PER_CPU * _cpus())
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


def sides_present(rows: list, where: dict, one_sided: bool) -> list | None:
    """The rows (sides) of a control whose two models' outcomes are there; None when the control
    cannot be measured: the two-model test needs every side, the one-model test (``one_sided``:
    model A alone has one side) any."""
    have = [row for row in rows if (row[2], row[1]) in where and (row[3], row[1]) in where]
    return have if have and (len(have) == len(rows) or one_sided) else None


def draw_pieces(bootstrap: int, permutations: int, cpus: int) -> list[tuple[range, range]]:
    """The draw ranges of the tasks of one entry group: as many pieces as CPUs, at most, and at
    least DRAWS_PER_TASK draws in each (fewer tasks where there is little to draw)."""
    pieces = max(1, min(cpus, -(-max(bootstrap, permutations) // DRAWS_PER_TASK)))
    cut = lambda n: [int(round(n * j / pieces)) for j in range(pieces + 1)]  # noqa: E731
    b, p = cut(bootstrap), cut(permutations)
    return [(range(b[j], b[j + 1]), range(p[j], p[j + 1])) for j in range(pieces)]


def control_results(ctx: RunContext, where: dict, controls: dict, label: str, one_sided: bool = False) -> dict:
    """{control: {"k=../rule/variant": entry}} over the ``controls`` that can be measured
    (``sides_present``), from the outcome files ``where`` ((model, split) -> (outcome dir, search
    results dir)). Ray tasks read the files: per control and variant, one ranks the records
    (sample level, most memorized) and each of ``draw_pieces`` computes a range of the bootstrap
    and swap draws; the driver assembles the entries from their aggregates."""
    cfg = ctx.cfg
    m = cfg.measure
    rank_task, draw_task = (ray.remote(num_cpus=1)(f) for f in (entries.ranking, entries.draws))
    pieces = draw_pieces(m.bootstrap, m.permutations, _cpus())
    submitted = {}
    for control, rows in controls.items():
        have = sides_present(rows, where, one_sided)
        if have is None:
            continue
        for variant in outcomes.VARIANTS:
            common = (where, have, control, variant, tuple(m.ks), cfg.splits.seed)
            submitted[(control, variant)] = (
                rank_task.remote(*common, tuple(m.top_fractions), cfg.report.gallery_size),
                [draw_task.remote(*common, m.seed, b, p) for b, p in pieces])
    out: dict = {}
    for (control, variant), (ranked, drawn) in submitted.items():
        ranked, drawn = ray.get(ranked), ray.get(drawn)
        got = out.setdefault(control, {})
        for key in ranked:
            entry = entries.assemble(key, variant, ranked, drawn, m)
            if entry is not None:
                got[f"k={key[0]}/{key[1]}/{variant}"] = entry
    for control, got in out.items():
        head = got.get(headline_key(m))
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
    first = {split: next(key for key in keys if key[1] == split) for split in attacked}  # every model: the same counts
    skipped = {f"{split}/{v}": int(counts[first[split]].get(f"no_gt/{v}", 0)) for split in attacked for v in outcomes.VARIANTS}
    results, one_model = {}, {}
    for space, searches in per_space.items():
        where = {(model, split): (outcome_dir(ctx, model, split, sp), ctx.search_results(model, split, sp))
                 for model, sp in searches.items() for split in attacked}
        results[space] = control_results(ctx, where, CONTROLS, space)
        if retriever:
            one_model[space] = control_results(ctx, where, text_retriever.CONTROLS,
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
