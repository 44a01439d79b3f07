"""The VLM (or SSL) measure stage at scale, on synthetic records and search results: its time,
the driver's peak memory and the tasks' peak memory.

    python benchmarks/measure_bench.py --records 100000 --vocab 21000 [--k 100] [--cpus 2] [--check]
    python benchmarks/measure_bench.py --kind ssl --records 100000 [--k 50] [--check]
    python benchmarks/measure_bench.py --kind sslmem --records 100000

Generated first, in a child process (so the driver measured below never held it): N attacked
records (target, reference, holdout: 0.4, 0.4, 0.2 of N) and 4 N public records, each image with
about 5 distinct objects drawn from a Zipf-like law (p ∝ 1 / (rank + 1)^1.1) over C objects, its
caption naming one of them; record shards, split members and both models' search results (k
random public neighbours per query, the product's result layout) as the stages write them. Then
the measure stage's work runs as the stage runs it, on a local Ray instance of ``--cpus`` CPUs:
the object tables' tasks (one per id range of a side, ``--records-per-block``), the scoring tasks
(outcome files), and the statistics tasks of both
controls with the default draws (``--bootstrap``/``--permutations`` to change them). The driver's
peak is its VmHWM over that work; the tasks' peak is the largest RSS a Ray worker reached
(sampled every 0.2 s); the statistics run on a fresh Ray instance, so their workers' peaks are
theirs alone. ``--check`` also computes every entry in one process from the same outcome
files (what the statistics were before they ran in tasks) and fails unless the two are equal.
``--records-per-task N`` (VLM) splits the statistics tasks' records into id ranges of about N
(``measure.records_per_task``): then the check allows the rounding of sums in another order (1e-12).
``--records-per-block N`` builds the per-record tables in id ranges of about N records a side
(``measure.records_per_table_block``), which bounds the tables' tasks and what a scoring task maps.

``--kind ssl``: the same records and search results with a label (one of 10 classes) per record in
the split members instead of objects (no record shards: the SSL stage reads labels from the
splits), and the SSL stage's work: the labels' task, the scoring tasks (top-1, top-5, confidence
per query), the statistics tasks of both controls (top-1 and top-5 tests, curve, most memorized).

``--kind sslmem``: both encoders' alignments of the scored sets' records (the same split sizes,
every space of configs/sslmem.yaml, the candidates aligned a little closer by encoder f) in the
embed stage's layout, and the SSLMem stage's work as it runs (``run_measure``: a scoring task per
set, the join, per space and score kind the observed statistics and the draws); its time is
reported as statistics, and ``--check`` does not apply.

The last line: ``driver peak MiB <x>, tasks peak MiB <y>, stage s <z>``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {"vlm": "quickstart-vlm.yaml", "ssl": "quickstart.yaml", "sslmem": "sslmem.yaml"}
SPACES = {"vlm": "caption_to_image", "ssl": "projector", "sslmem": "projector"}
CLASSES = 10  # labels of the SSL kind's records
SPLITS = {"target": 0.4, "reference": 0.4, "holdout": 0.2}
OBJECTS_PER_IMAGE = 5
CHUNK = 65_536  # records or queries written per file or row group


def _context(out: str, args):
    from study.config_load import load_config
    from study.frame.context import RunContext

    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", CONFIGS[args.kind])
    cfg = load_config(config, [f"search.k={args.k}"] + ([f"measure.ks=[1, 10, {args.k}]"] if args.kind == "vlm" else []),
                      out)
    m = {"bootstrap": args.bootstrap, "permutations": args.permutations, "records_per_task": args.records_per_task,
         "records_per_table_block": args.records_per_block}
    cfg = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure, **{k: v for k, v in m.items() if v}))
    return RunContext.create(cfg)


def _flat(a):
    """One Arrow array (pyarrow chunks arrays of many strings)."""
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _objects(rng, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n + 1,), object ids): ~OBJECTS_PER_IMAGE distinct Zipf-drawn ids per record."""
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    draws = rng.choice(vocab, size=(n, OBJECTS_PER_IMAGE + 1), p=p / p.sum())
    draws.sort(axis=1)
    keep = np.ones_like(draws, dtype=bool)
    keep[:, 1:] = draws[:, 1:] != draws[:, :-1]  # distinct within a record
    keep[:, OBJECTS_PER_IMAGE:] &= rng.random(n)[:, None] < 0.2  # a sixth now and then
    sizes = keep.sum(axis=1)
    return np.concatenate([[0], np.cumsum(sizes)]), draws[keep]


def _alignments(ctx, rng, records: int) -> None:
    """SSLMem's inputs: both encoders' alignment of every record of the scored sets, per space, in
    the embed stage's layout; encoder f (model A) aligns the candidates (target) a little closer."""
    from study.embed.views import view_name

    for split, fraction in SPLITS.items():
        ids = np.char.add(split[0], np.arange(int(records * fraction)).astype(str))
        for model in ("model_a", "model_b"):
            for space in ctx.cfg.sslmem.spaces():
                uri = ctx.embeddings(model, split, view_name(space))
                os.makedirs(uri)
                for j, start in enumerate(range(0, len(ids), CHUNK)):
                    n = len(ids[start : start + CHUNK])
                    align = 0.6 + 0.1 * rng.standard_normal(n) - (0.02 if (model, split) == ("model_a", "target") else 0)
                    emb = pa.FixedSizeListArray.from_arrays(pa.array(align.astype(np.float32)), 1)
                    pq.write_table(pa.table({"id": pa.array(ids[start : start + CHUNK]), "embedding": emb}),
                                   os.path.join(uri, f"part-{j:05d}.parquet"))


def generate(out: str, args) -> None:
    """Write the records, split members and search results of one synthetic study."""
    from study import storage
    from study.data.loading import split_uri
    from study.data.records import RECORD_SCHEMA
    from study.search.results import PARTS, SCHEMA
    from study.stages.search import rows_per_part

    ctx = _context(out, args)
    rng = np.random.default_rng(args.records)
    if args.kind == "sslmem":
        return _alignments(ctx, rng, args.records)
    names = pa.array([f"object{j:05d}" for j in range(args.vocab)])
    n_att = {s: int(args.records * f) for s, f in SPLITS.items()}
    n_pub = 4 * args.records
    ids = {"public": np.char.add("p", np.arange(n_pub).astype(str))}
    ids.update({s: np.char.add(s[0], np.arange(n).astype(str)) for s, n in n_att.items()})
    os.makedirs(ctx.data_root)
    shard = 0
    for split, split_ids in ids.items():
        os.makedirs(split_uri(ctx.splits_dir, split))
        for start in range(0, len(split_ids), CHUNK):
            chunk = split_ids[start : start + CHUNK]
            if args.kind == "ssl":
                pq.write_table(pa.table({"id": pa.array(chunk), "label": pa.array(rng.integers(0, CLASSES, len(chunk)))}),
                               os.path.join(split_uri(ctx.splits_dir, split), f"part-{shard:05d}.parquet"))
                shard += 1
                continue
            offsets, objs = _objects(rng, len(chunk), args.vocab)
            objects = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _flat(names.take(pa.array(objs))))
            first = names.take(pa.array(objs[offsets[:-1]]))
            n = len(chunk)
            table = pa.table({
                "id": pa.array(chunk), "image": pa.array([b""] * n, pa.binary()),
                "width": pa.array(np.full(n, 32, np.int32)), "height": pa.array(np.full(n, 32, np.int32)),
                "label": pa.nulls(n, pa.int32()), "boxes": pa.nulls(n, RECORD_SCHEMA.field("boxes").type),
                "caption": pc.binary_join_element_wise("a photo of a ", first, ""), "objects": objects}, schema=RECORD_SCHEMA)
            pq.write_table(table, os.path.join(ctx.data_root, f"part-{shard:05d}.parquet"))
            pq.write_table(pa.table({"id": pa.array(chunk), "label": pa.nulls(n, pa.int64())}),
                           os.path.join(split_uri(ctx.splits_dir, split), f"part-{shard:05d}.parquet"))
            shard += 1
    public_ids = _flat(pa.array(ids["public"]))
    per_part = rows_per_part(ctx.cfg.search)
    for model in ("model_a", "model_b"):
        for split in SPLITS:
            uri = ctx.search_results(model, split, SPACES[args.kind])
            os.makedirs(uri)
            q = ids[split]
            parts = max(1, -(-len(q) // per_part))
            for j in range(parts):
                with pq.ParquetWriter(os.path.join(uri, f"part-{j:05d}.parquet"), SCHEMA) as writer:
                    for start in range(j * per_part, min((j + 1) * per_part, len(q)), CHUNK):
                        chunk = q[start : min(start + CHUNK, (j + 1) * per_part, len(q))]
                        rows = rng.integers(0, n_pub, size=len(chunk) * args.k)
                        offsets = pa.array(np.arange(0, len(rows) + 1, args.k, dtype=np.int32))
                        writer.write_table(pa.table({
                            "query_id": pa.array(chunk),
                            "neighbor_ids": pa.ListArray.from_arrays(offsets, _flat(public_ids.take(pa.array(rows)))),
                            "distances": pa.ListArray.from_arrays(offsets, pa.array(np.zeros(len(rows), np.float32)))},
                            schema=SCHEMA))
            storage.write_json(os.path.join(uri, PARTS), {"key": "bench", "complete": parts})


def _vlm_stage(ctx, keys):
    """The VLM stage's work: (counts, where, results, the entries in one process)."""
    from study.frame.kinds import CONTROLS
    from study.kinds.vlm_dejavu import entries, measure, outcomes
    from study.kinds.vlm_dejavu.objects import object_tables

    m = ctx.cfg.measure
    tables = object_tables(ctx.data_root, ctx.splits_dir, tuple(SPLITS), m.records_per_table_block)
    counts = measure.score_searches(ctx, outcomes.score_part, tables, keys, tuple(m.ks), m.top_n)
    where = {(mo, s): (measure.outcome_dir(ctx, mo, s, sp), ctx.search_results(mo, s, sp)) for mo, s, sp in keys}
    yield counts
    a_keys = [key for key in keys if key[0] == "model_a"]
    records = sum(counts[key]["records"] for key in a_keys)
    blocks = measure.blocks_for(ctx, [measure.outcome_dir(ctx, *key) for key in a_keys], records)
    yield where, measure.control_results(ctx, where, CONTROLS, "bench", blocks, records), len(blocks)
    yield {c: entries.local(where, rows, c, outcomes.VARIANTS, m, ctx.cfg.splits.seed, ctx.cfg.report.gallery_size)
           for c, rows in CONTROLS.items()}


def _ssl_stage(ctx, keys):
    """The SSL stage's work, as ``_vlm_stage``."""
    from study.frame.kinds import CONTROLS
    from study.kinds.ssl_dejavu import entries, measure, outcomes

    tables = outcomes.label_tables(ctx.splits_dir, tuple(SPLITS), CLASSES, ctx.cfg.measure.records_per_table_block)
    counts = measure.score_searches(ctx, outcomes.score_part, tables, keys, per_key=lambda key: (key[1],))
    where = {(mo, s): (measure.outcome_dir(ctx, mo, s, sp), ctx.search_results(mo, s, sp)) for mo, s, sp in keys}
    yield counts
    yield where, measure.control_results(ctx, where, CONTROLS, "bench"), 1
    yield {c: entries.local(where, rows, c, ctx.cfg.measure, ctx.cfg.splits.seed, ctx.cfg.report.gallery_size)
           for c, rows in CONTROLS.items()}


def _sslmem_stage(ctx, keys):
    """The SSLMem stage's work (scoring sets, joining, statistics: ``run_measure`` itself); its
    scoring and statistics are not timed apart, and there is no one-process check."""
    from study.kinds.sslmem import measure

    yield {}
    yield None, measure.run_measure(ctx), 1


STAGES = {"vlm": _vlm_stage, "ssl": _ssl_stage, "sslmem": _sslmem_stage}


def _close(a, b) -> bool:
    """Equal, floats to 1e-12: with several id ranges the sums run in another order."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def run(out: str, args) -> dict:
    import ray

    from proc_memory import MemorySampler, hwm_mib, reset_peak_rss

    ctx = _context(out, args)
    keys = [(model, split, SPACES[args.kind]) for model in ("model_a", "model_b") for split in SPLITS]
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    try:
        reset_peak_rss()
        with MemorySampler() as sampler:
            t0 = time.perf_counter()
            stage = STAGES[args.kind](ctx, keys)
            counts = next(stage)  # the tables' task and the scoring tasks
            scored = time.perf_counter()
            # A fresh instance for the statistics: a worker keeps the memory of the scoring task it
            # ran (the tables it mapped), which would be counted as a statistics task's.
            ray.shutdown()
            ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
            t1 = time.perf_counter()
            where, results, blocks = next(stage)  # the statistics tasks
            t2 = time.perf_counter()
        driver = hwm_mib(os.getpid())
        workers = {p: kib for p, kib in sampler.peak_by_pid.items() if p != os.getpid()}
        line = {"kind": args.kind, "records": args.records, "vocab": args.vocab if args.kind == "vlm" else None,
                "k": args.k, "cpus": args.cpus, "bootstrap": ctx.cfg.measure.bootstrap,
                "permutations": ctx.cfg.measure.permutations, "id_ranges": blocks, "scored": sum(c["records"] for c in counts.values()),
                "scoring_s": round(scored - t0, 1), "statistics_s": round(t2 - t1, 1), "driver_peak_mib": round(driver),
                "tasks_peak_mib": round(max(workers.values(), default=0) / 1024),
                "results": sum(len(e) for e in results.values()),
                "tasks_peak_mib_by_task": {cmd.removeprefix("ray::"): round(kib / 1024) for cmd, kib in
                                           sorted(sampler.peak_by_cmd.items()) if kib}}
        if args.check and args.kind != "sslmem":  # in this process, from the same outcome files
            local = next(stage)
            line["equal_to_one_process"] = local == results if blocks == 1 else _close(local, results)
            if not line["equal_to_one_process"]:
                raise SystemExit("the results computed in tasks differ from those computed in one process")
    finally:
        ray.shutdown()
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(STAGES), default="vlm", help="whose measure stage")
    ap.add_argument("--records", type=int, default=100_000, help="attacked records (the public set is 4x)")
    ap.add_argument("--vocab", type=int, default=21_000, help="objects in the vocabulary (C)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--bootstrap", type=int, default=0, help="draws (default: the config's)")
    ap.add_argument("--permutations", type=int, default=0, help="draws (default: the config's)")
    ap.add_argument("--records-per-task", type=int, default=1_000_000,
                    help="measure.records_per_task: the VLM statistics tasks' id ranges")
    ap.add_argument("--records-per-block", type=int, default=5_000_000,
                    help="measure.records_per_table_block: the id ranges of the per-record tables (VLM)")
    ap.add_argument("--check", action="store_true", help="also compute the entries in one process and compare (VLM, SSL)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    out = args.dir or tempfile.mkdtemp(prefix="measure-bench-")
    t = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=generate, args=(out, args))
    child.start()
    child.join()
    if child.exitcode:
        raise SystemExit(f"generating the inputs failed ({child.exitcode})")
    what = ("both encoders' alignments" if args.kind == "sslmem" else
            f"and {4 * args.records} public records with their search results")
    print(f"generated {args.records} attacked records' {what} in {time.perf_counter() - t:.0f} s under {out}", flush=True)
    line = run(out, args)
    print(json.dumps(line))
    print(f"driver peak MiB {line['driver_peak_mib']}, tasks peak MiB {line['tasks_peak_mib']}, "
          f"stage s {line['scoring_s'] + line['statistics_s']:.1f}")


if __name__ == "__main__":
    main()
