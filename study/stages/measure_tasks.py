"""The measure stage's Ray tasks, shared by the study kinds: scoring every part of the search
results in tasks that write per-record outcome files (``outcome_files``), and splitting a test's
bootstrap and swap draws into pieces, one task each. The draws are keyed by number
(``stats.draw_rng``), so the numbers do not depend on how many pieces there are. The driver
receives counts and per-side aggregates, never a per-record array.
"""
from __future__ import annotations

from typing import Callable

import ray

from study import storage
from study.stages import outcome_files
from study.frame.context import RunContext
from study.search import results

IN_FLIGHT_PER_CPU = 2  # scoring tasks submitted per CPU of the cluster at a time
DRAWS_PER_TASK = 250  # the fewest bootstrap or swap draws a statistics task is given
PROGRESS_PARTS = 20  # with this many parts or more, progress is logged every tenth of them


def cpus() -> int:
    """The cluster's CPUs, which size the task windows and the draw pieces."""
    return int(ray.cluster_resources().get("CPU", 1))


def outcome_dir(ctx: RunContext, model: str, split: str, space: str) -> str:
    return ctx.stage_dir("measure", "outcomes", model, split, space)


def score_searches(ctx: RunContext, score_part: Callable, tables, keys: list[tuple[str, str, str]], *extra,
                   per_key: Callable[[tuple], tuple] = lambda key: ()) -> dict:
    """Score every part of the given searches ((model, split, space)) in Ray tasks, each calling
    ``score_part(tables, results uri, part, outcome dir, *extra, *per_key(key))``, which writes
    the part's outcome file and returns counts; returns {key: summed counts}. At most IN_FLIGHT_PER_CPU
    tasks per CPU are queued at once, and progress is logged as parts finish."""
    task = ray.remote(num_cpus=1)(score_part)
    jobs = []
    for key in keys:
        uri = ctx.search_results(*key)
        out = outcome_dir(ctx, *key)
        storage.remove(out)
        parts = int(storage.read_json(storage.join(uri, results.PARTS))["complete"])
        jobs += [(key, uri, j, out) for j in range(parts)]
    window = max(1, IN_FLIGHT_PER_CPU * cpus())
    counts: dict = {key: {} for key in keys}
    pending: dict = {}
    done = 0
    for job in jobs + [None] * window:
        if job is not None:
            key, uri, j, out = job
            pending[task.remote(tables, uri, j, out, *extra, *per_key(key))] = key
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
    """The draw ranges of the tasks of one test: as many pieces as CPUs, at most, and at least
    DRAWS_PER_TASK draws in each (fewer tasks where there is little to draw)."""
    pieces = max(1, min(cpus, -(-max(bootstrap, permutations) // DRAWS_PER_TASK)))
    cut = lambda n: [int(round(n * j / pieces)) for j in range(pieces + 1)]  # noqa: E731
    b, p = cut(bootstrap), cut(permutations)
    return [(range(b[j], b[j + 1]), range(p[j], p[j + 1])) for j in range(pieces)]


def rank_and_draw(groups: dict, rank: Callable, draw: Callable, pieces: list[tuple[range, range]]) -> dict:
    """{group: (rank's result, [draw's result per piece])}: for every group (``groups``: {group:
    (args, rank's extra args, draw's extra args)}) one task ranks and one task per piece draws,
    ``draw(*args, *draw extra, boot range, swap range)``; every task is submitted before any is
    waited for."""
    rank_task, draw_task = (ray.remote(num_cpus=1)(f) for f in (rank, draw))
    submitted = {g: (rank_task.remote(*args, *rank_extra), [draw_task.remote(*args, *draw_extra, b, p) for b, p in pieces])
                 for g, (args, rank_extra, draw_extra) in groups.items()}
    return {g: (ray.get(ranked), ray.get(drawn)) for g, (ranked, drawn) in submitted.items()}


def blocks_for(ctx: RunContext, uris: list[str], records: int):
    """The id ranges the statistics tasks read (``outcome_files.id_blocks``): one, every record,
    unless ``records`` (the most a control's tasks would hold) exceed ``measure.records_per_task``;
    then a task samples the ids of the outcome directories ``uris`` for the bounds."""
    per_task = ctx.cfg.measure.records_per_task
    wanted = -(-records // per_task)
    if wanted <= 1:
        return [outcome_files.WHOLE]
    blocks = ray.get(ray.remote(num_cpus=1)(outcome_files.id_blocks).remote(uris, wanted))
    ctx.log("measure", f"{records} records in {len(blocks)} id ranges of about {per_task} (measure.records_per_task)")
    return blocks


def summarise_and_draw(groups: dict, blocks: list, summarise: Callable, plan: Callable, draw: Callable,
                       pieces: list[tuple[range, range]]) -> dict:
    """{group: ([summarise's result per block], [[draw's result per piece] per block])}: for
    every group (``groups``: {group: (args, summarise's extra args, plan's extra args, draw's
    extra args)}) one task per id range ``blocks`` summarises, ``summarise(*args, block, *extra)``;
    from every block's summary ``plan(summaries, *extra)`` gives each block's plan, and one task
    per block and piece draws, ``draw(*args, *extra, block, its plan, boot range, swap range,
    first piece?)``. Every summary is submitted before any is waited for, and a group's draws as
    soon as its summaries are in."""
    summarise_task, draw_task = (ray.remote(num_cpus=1)(f) for f in (summarise, draw))
    summarised = {g: [summarise_task.remote(*args, block, *s_extra) for block in blocks]
                  for g, (args, s_extra, _, _) in groups.items()}
    submitted = {}
    for g, (args, _, p_extra, d_extra) in groups.items():
        got = ray.get(summarised[g])
        plans = plan(got, *p_extra)
        submitted[g] = (got, [[draw_task.remote(*args, *d_extra, block, plans[j], b, p, i == 0)
                               for i, (b, p) in enumerate(pieces)] for j, block in enumerate(blocks)])
    return {g: (got, [ray.get(row) for row in refs]) for g, (got, refs) in submitted.items()}
