"""IVF-PQ vs flat shards at 1M-10M vectors, built from storage as the search stage builds them,
and an extrapolation of the memory and time model to LAION sizes.

    python benchmarks/ivfpq_bench.py [--sizes 1000000,3000000] [--d 128] [--cpus 2] [--shards 2]
                                      [--dir /tmp/ivfpq_bench] [--extrapolate 50000000,400000000]

Data: seeded synthetic clustered vectors (1024 centres; each vector is its centre plus a spread
over one of 16 random 16-dimensional subspaces, plus isotropic noise; L2-normalised, as
``search.metric: l2_normalized`` makes them), generated in chunks and written once to Parquet
parts (id, embedding) under ``--dir``; a "tune" query set (nprobe calibration) and an "eval" set
(recall and speed), 1000 queries each, drawn from the same distribution.

Per size, on one local Ray instance of ``--cpus`` CPUs (``--shards`` shard actors, one FAISS
thread each; the IVF-PQ trainer uses every core), through the product's own code
(``study.search.build.open_index``, ``study.search.recall.measure_recall``,
``study.stages.search.search_set``):

1. flat shards: build (read slices, persist), stream the eval queries -> exact results, queries/s;
2. IVF-PQ with the automatic parameters: train, build, calibrate nprobe on the tune set (target
   recall@10 0.9), stream the eval queries -> recall@10 against (1), queries/s; then reopen
   (load the persisted shards) and time that.

Memory: each process's peak RSS (``VmHWM``, reset for the driver after generating the data) and
the peak of the summed RSS of the driver and Ray workers, sampled every 0.2 s. Every figure is
printed as measured; the extrapolation (the product's memory model for shards and bytes, and the
measured per-core rates scaled by the work per vector) is printed as extrapolated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

from proc_memory import MemorySampler, hwm_mib, reset_peak_rss

CENTRES, SUBSPACES, SUB, SPREAD, NOISE = 1024, 16, 16, 1.0, 0.1
CHUNK = 250_000  # rows generated and written at once (128 MB at d = 128)
QUERIES = 1000


# -- data ----------------------------------------------------------------------------------------
def clustered(n: int, d: int, seed: int):
    import numpy as np

    crng, rng = np.random.default_rng(12345), np.random.default_rng(seed)
    centres = crng.standard_normal((CENTRES, d), dtype=np.float32)
    bases = crng.standard_normal((SUBSPACES, SUB, d), dtype=np.float32) * (SPREAD / math.sqrt(SUB))
    lab = rng.integers(0, CENTRES, n)
    x = centres[lab] + NOISE * rng.standard_normal((n, d), dtype=np.float32)
    z = rng.standard_normal((n, SUB), dtype=np.float32)
    for g in range(SUBSPACES):
        rows = np.flatnonzero(lab % SUBSPACES == g)
        x[rows] += z[rows] @ bases[g]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ensure_set(uri: str, n: int, d: int, seed: int, prefix: str):
    """The embedding set at ``uri``, generated chunk by chunk unless a complete one is there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.search import layout

    done = os.path.join(uri, "_done")
    if not os.path.exists(done):
        os.makedirs(uri, exist_ok=True)
        for j, start in enumerate(range(0, n, CHUNK)):
            x = clustered(min(CHUNK, n - start), d, seed * 1_000_003 + j)
            emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d)
            ids = pa.array([f"{prefix}{start + i:09d}" for i in range(len(x))])
            pq.write_table(pa.table({"id": ids, "embedding": emb}), os.path.join(uri, f"part-{j:05d}.parquet"),
                           row_group_size=65_536)
        open(done, "w").close()
    return layout.describe(uri)


# -- one size --------------------------------------------------------------------------------------
def run_size(args, n: int) -> dict:
    import numpy as np
    import ray

    from study.config import IVFPQConfig, SearchConfig
    from study.core.ivf_params import recall_at_k
    from study.stages.search import search_set
    from study.search.build import open_index
    from study.search.recall import measure_recall, sample_queries
    from study.search.results import ResultWriter, read_results

    root = os.path.join(args.dir, f"n{n}")
    t0 = time.perf_counter()
    public = ensure_set(os.path.join(root, "public"), n, args.d, 1, "p")
    tune = ensure_set(os.path.join(args.dir, f"tune-d{args.d}"), QUERIES, args.d, 2, "t")
    evalq = ensure_set(os.path.join(args.dir, f"eval-d{args.d}"), QUERIES, args.d, 3, "e")
    generated = time.perf_counter() - t0
    reset_peak_rss()
    common = dict(k=args.k, shards=args.shards, cpus_per_shard=args.cpus / args.shards, query_batch_size=250,
                  shard_headroom_gb=0.25, rows_per_file=QUERIES)
    out = {"n": n, "d": args.d, "generate_or_read_s": round(generated, 1)}
    log = lambda m: print(f"  [{n}] {m}", flush=True)  # noqa: E731

    def stream(index, cfg, name, nprobe):
        uri = os.path.join(root, "results", name)
        start = time.perf_counter()
        search_set(index, evalq, ResultWriter(uri, f"{name}-{time.time()}", QUERIES), cfg, nprobe)
        return time.perf_counter() - start, read_results(uri)[1]

    # 1. flat: the exact answers, and the speed to beat
    flat_cfg = SearchConfig(index="flat", **common)
    with MemorySampler() as mem:
        start = time.perf_counter()
        index, info = open_index(flat_cfg, public, os.path.join(root, "index"), log)
        build = time.perf_counter() - start
        try:
            index.search(np.zeros((8, args.d), np.float32), args.k)  # warm
            seconds, exact = stream(index, flat_cfg, "flat", 0)
            actor_hwm = [hwm_mib(i["pid"]) for i in index.infos]
        finally:
            index.close()
    out["flat"] = {"build_s": round(build, 1), "loaded": info["shards_loaded"], "qps": round(QUERIES / seconds, 1),
                   "shard_peak_rss_mib": [round(h) for h in actor_hwm], "peak_total_rss_mib": round(mem.peak_total / 1024),
                   "model_shard_bytes_mib": round(info["index"]["shard_bytes"] / 2**20)}

    # 2. IVF-PQ, automatic parameters, calibrated on the tune set, evaluated on the eval set
    ivf_cfg = SearchConfig(index="ivfpq", recall_queries=QUERIES, ivf=IVFPQConfig(target_recall=0.9), **common)
    with MemorySampler() as mem:
        start = time.perf_counter()
        index, info = open_index(ivf_cfg, public, os.path.join(root, "index"), log)
        build = time.perf_counter() - start
        try:
            start = time.perf_counter()
            samples = sample_queries({"tune": tune}, QUERIES, 0, normalize=True)
            nprobe, recall = measure_recall(index, samples, args.k, info["index"]["nlist"], 0, 0.9, log)
            calibrate = time.perf_counter() - start
            index.search(np.zeros((8, args.d), np.float32), args.k, nprobe)  # warm
            seconds, approx = stream(index, ivf_cfg, "ivfpq", nprobe)
            actor_hwm = [hwm_mib(i["pid"]) for i in index.infos]
        finally:
            index.close()
    start = time.perf_counter()
    again, info2 = open_index(ivf_cfg, public, os.path.join(root, "index"), log)
    reload_s = time.perf_counter() - start
    again.close()
    ids = sorted({x for row in exact for x in row} | {x for row in approx for x in row})
    code = {x: i for i, x in enumerate(ids)}
    E = np.array([[code[x] for x in row] for row in exact])
    A = np.array([[code[x] for x in row] for row in approx])
    p = info["index"]
    out["ivfpq"] = {
        "nlist": p["nlist"], "m": p["m"], "train_size": p["train_size"], "nprobe": nprobe,
        "train_s": info["train_seconds"], "build_s": round(build, 1), "calibrate_s": round(calibrate, 1),
        "reload_s": round(reload_s, 1), "reload_loaded": info2["shards_loaded"], "reload_built": info2["shards_built"],
        "recall10_tune": recall["recall@10"], "recall10_eval": round(float(recall_at_k(A, E, 10).mean()), 4),
        "tried": recall["tried"], "qps": round(QUERIES / seconds, 1),
        "shard_peak_rss_mib": [round(h) for h in actor_hwm], "peak_total_rss_mib": round(mem.peak_total / 1024),
        "model_shard_bytes_mib": round(p["shard_bytes"] / 2**20),
    }
    out["ivfpq"]["qps_over_flat"] = round(out["ivfpq"]["qps"] / out["flat"]["qps"], 2)
    out["driver_peak_rss_mib"] = round(hwm_mib(os.getpid()))
    out["load_average_1_5_15"] = [round(x, 1) for x in os.getloadavg()]  # a shared host's other work
    out["ray_memory_gib"] = round(ray.cluster_resources().get("memory", 0) / 2**30, 1)
    return out


# -- extrapolation ----------------------------------------------------------------------------------
def rates(m: dict, cpus: int) -> dict:
    """Core-seconds per unit of work, from one measured size: k-means (train size x nlist x d),
    shard build (N x nlist x d: reading, assigning, encoding and persisting), an IVF-PQ query
    (every shard scans its nlist centroids; nprobe lists of N / nlist codes of m bytes in all) and
    a flat query (N x d), a flat shard build (N x d: reading and persisting)."""
    n, d, ivf = m["n"], m["d"], m["ivfpq"]
    query_work = args_shards(m) * ivf["nlist"] * d + ivf["nprobe"] * n / ivf["nlist"] * ivf["m"]
    return {
        "train": ivf["train_s"] * cpus / (ivf["train_size"] * ivf["nlist"] * d),
        "add": max(ivf["build_s"] - ivf["train_s"], 1e-9) * cpus / (n * ivf["nlist"] * d),
        "ivf_query": cpus / ivf["qps"] / query_work,
        "flat_query": cpus / m["flat"]["qps"] / (n * d),
        "flat_build": m["flat"]["build_s"] * cpus / (n * d),
    }


def args_shards(m: dict) -> int:
    return len(m["ivfpq"]["shard_peak_rss_mib"])


def extrapolate(measured: dict, target_n: int, d: int, node_cores: int, node_gib: float, cpus: int) -> dict:
    """Shards, nodes, bytes (the product's memory model) and hours/queries per second (measured
    rates at the largest measured size, scaled by the work) for IVF-PQ and flat at ``target_n``."""
    from study.core import ivf_params
    from study.core.shard_plan import GIB, bytes_per_vector, fixed_bytes, plan_shards

    r = rates(measured, cpus)
    name_bytes = 14  # "p000000123" and Parquet's length prefix, as measured by describe()
    nlist = ivf_params.choose_nlist(target_n)
    train = ivf_params.training_size(target_n, nlist)
    out = {}
    for kind in ("ivfpq", "flat"):
        # the product's rule with the budget of one node (CODE_BUDGET_SHARE of its memory)
        m = ivf_params.choose_code_size(d, target_n, 0.5 * node_gib * GIB) if kind == "ivfpq" else 0
        per_vector = bytes_per_vector(kind, d, m, name_bytes)
        fixed = fixed_bytes(kind, d, nlist, m) if kind == "ivfpq" else 0
        nodes = 1
        while True:
            plan = plan_shards(target_n, per_vector, fixed, GIB, node_gib * GIB, nodes)
            if 0 < plan.nodes <= nodes:
                break
            nodes += 1
        cores = nodes * node_cores
        entry = {"nodes": nodes, "shards": plan.shards, "index_gib": round(plan.index_bytes / GIB, 1),
                 "bytes_per_vector": round(per_vector, 1)}
        if kind == "ivfpq":
            nprobe = measured["ivfpq"]["nprobe"]
            train_h = r["train"] * train * nlist * d / node_cores / 3600
            add_h = r["add"] * target_n * nlist * d / cores / 3600
            query_work = plan.shards * nlist * d + nprobe * target_n / nlist * m
            entry.update({"nlist": nlist, "m": m, "train_size": train, "nprobe_assumed": nprobe,
                          "train_hours": round(train_h, 2), "build_hours": round(train_h + add_h, 2),
                          "qps": round(cores / (r["ivf_query"] * query_work), 1)})
        else:
            entry.update({"build_hours": round(r["flat_build"] * target_n * d / cores / 3600, 2),
                          "qps": round(cores / (r["flat_query"] * target_n * d), 1)})
        out[kind] = entry
    return out


# -- report ----------------------------------------------------------------------------------------
def print_report(runs: list[dict], extra: dict, args) -> None:
    print(f"\nIVF-PQ vs flat shards, d={args.d}, k={args.k}, {args.shards} shard actors on {args.cpus} CPUs, "
          f"{QUERIES} eval queries (recall@10 against the flat shards' exact answers)")
    head = ("N", "index", "params", "train s", "build s", "reload s", "queries/s", "vs flat", "recall@10",
            "shard peak MiB", "model MiB", "sum RSS MiB")
    rows = []
    for m in runs:
        f, v = m["flat"], m["ivfpq"]
        rows.append((f"{m['n']:,}", "flat", "exact", "-", f"{f['build_s']:.1f}", "-", f"{f['qps']:.0f}", "1.00x", "1.0000",
                     "/".join(map(str, f["shard_peak_rss_mib"])), str(f["model_shard_bytes_mib"]), str(f["peak_total_rss_mib"])))
        rows.append((f"{m['n']:,}", "ivfpq", f"IVF{v['nlist']},PQ{v['m']} nprobe {v['nprobe']}", f"{v['train_s']:.1f}",
                     f"{v['build_s']:.1f}", f"{v['reload_s']:.1f}", f"{v['qps']:.0f}", f"{v['qps_over_flat']:.2f}x",
                     f"{v['recall10_eval']:.4f}", "/".join(map(str, v["shard_peak_rss_mib"])),
                     str(v["model_shard_bytes_mib"]), str(v["peak_total_rss_mib"])))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  source")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  measured")
    for m in runs:
        print(f"N={m['n']:,}: driver peak RSS {m['driver_peak_rss_mib']} MiB (measured; after data generation), "
              f"nprobe ladder recall@10 on the tune set {m['ivfpq']['tried']}, reload: "
              f"{m['ivfpq']['reload_loaded']} shards loaded, {m['ivfpq']['reload_built']} built; host load average "
              f"at the end {m.get('load_average_1_5_15')} on {os.cpu_count()} cores")
    print(f"\nextrapolated from N={runs[-1]['n']:,} (measured per-core rates x work; memory from the product's "
          f"model; nodes of {args.node_cores} cores and {args.node_memory_gb:g} GiB for shards; nprobe kept as "
          f"calibrated at the measured size, so recall at scale must be re-measured):")
    for key, e in extra.items():
        v, f = e["ivfpq"], e["flat"]
        print(f"  {key}: IVF{v['nlist']},PQ{v['m']} {v['bytes_per_vector']} B/vector, {v['index_gib']} GiB, "
              f"{v['shards']} shards on {v['nodes']} node(s), train {v['train_hours']} h, build {v['build_hours']} h, "
              f"~{v['qps']:.0f} queries/s | flat {f['bytes_per_vector']} B/vector, {f['index_gib']} GiB, {f['shards']} "
              f"shards on {f['nodes']} node(s), ~{f['qps']:.0f} queries/s  (extrapolated)")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000000,3000000", help="public set sizes, comma-separated")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--dir", default="/tmp/ivfpq_bench", help="where data, indexes and results go")
    p.add_argument("--extrapolate", default="50000000,400000000")
    p.add_argument("--node-cores", type=int, default=16)
    p.add_argument("--node-memory-gb", type=float, default=64.0, help="memory a node gives shard actors")
    args = p.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            start = time.perf_counter()
            runs.append(run_size(args, n))
            runs[-1]["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps(runs[-1]), flush=True)
    finally:
        ray.shutdown()
    extra = {}
    for n in (int(s) for s in args.extrapolate.split(",") if s):
        for d in sorted({args.d, 512}):
            extra[f"N={n:,} d={d}"] = extrapolate(runs[-1], n, d, args.node_cores, args.node_memory_gb, args.cpus)
    print_report(runs, extra, args)
    result = {"runs": runs, "extrapolated": extra}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
