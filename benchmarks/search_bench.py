"""The search stage against plain FAISS on the same data and threads, flat and IVF-PQ.

    python benchmarks/search_bench.py [--sizes 1000000] [--d 128] [--nq 4000] [--k 10] [--threads 2]
                                      [--shards 2] [--batches 250,1024] [--ivfpq] [--dir /tmp/search_bench]

Data: the clustered, L2-normalised vectors of ``ivfpq_bench.py`` (public set and queries), written
once as Parquet embedding sets under ``--dir``, as the embed stage writes them.

Per size, in one run (the host is shared and noisy, so only ratios measured side by side mean much):

- **plain FAISS**: one ``IndexFlatL2`` holding every vector, ``--threads`` OpenMP threads, all
  queries in one call (nq·d is far above FAISS's BLAS threshold: its fastest path);
- **the stage**: ``ShardedIndex`` (``--shards`` actors on a local Ray instance of ``--threads``
  CPUs, one FAISS thread each, each reading its slice from the Parquet files) driven by the search
  stage's own loop ``search_set`` at each query batch size of ``--batches`` (full batches and the
  tail), writing Parquet results; its build (read + persist) and reload times;
- with ``--ivfpq``: the same for IVF-PQ (the product's automatic parameters, nprobe calibrated to
  recall@10 0.9), beside plain FAISS's one ``IndexIVFPQ`` of the same parameters trained on the
  same sample, one call; recall@10 of both against the exact answers.

Each row: queries/s, GFLOP/s (flat: 2·nq·N·d) and that as a share of a GEMM peak measured in the
same run at the shape FAISS's BLAS path tiles with (``distance_compute_blas_query_bs`` queries ×
``distance_compute_blas_database_bs`` database rows, float32, ``--threads`` threads), and the
stage's speed over plain FAISS (goal: >= 0.9 at every batch size). A JSON line carries every number.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ivfpq_bench import ensure_set  # noqa: E402  (the same data as the IVF-PQ benchmark)
from knn_bench import gemm_peak_gflops, pin_blas_threads  # noqa: E402


def gemm_peak(d: int) -> dict:
    """Best float32 GEMM GFLOP/s at FAISS's tile shape, (query_bs, d) @ (d, database_bs), with
    numpy's BLAS threads pinned to ``--threads`` (main)."""
    import faiss

    qbs, dbs = faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs
    return {"shape": [qbs, d, dbs], "gflops": round(gemm_peak_gflops(d), 1)}


def read_all(es, d: int):
    import numpy as np

    from study.search import layout

    parts = [layout.vectors(b.column("embedding"), d) for b in layout.iter_pieces(es.pieces(0, es.n), ("embedding",))]
    return np.concatenate(parts)


def rate(nq: int, seconds: float, n: int, d: int, peak: float, flat: bool) -> dict:
    out = {"seconds": round(seconds, 3), "qps": round(nq / seconds, 1)}
    if flat:
        gflops = 2 * nq * n * d / seconds / 1e9
        out.update({"gflops": round(gflops, 1), "of_peak": round(gflops / peak, 3)})
    return out


def stage_runs(index, queries, root: str, cfg_kw: dict, batches: list[int], nprobe: int, tag: str):
    """(per batch size: seconds, results) of the search stage's loop over ``queries``."""
    from study.config import SearchConfig
    from study.stages.search import rows_per_part, search_set
    from study.search.results import ResultWriter, read_results

    out = {}
    for b in batches:
        cfg = SearchConfig(query_batch_size=b, **cfg_kw)
        uri = os.path.join(root, "results", f"{tag}-b{b}-{time.time_ns()}")
        start = time.perf_counter()
        search_set(index, queries, ResultWriter(uri, "bench", rows_per_part(cfg)), cfg, nprobe)
        out[b] = (time.perf_counter() - start, read_results(uri)[1])
    return out


def run_size(args, n: int) -> dict:
    import faiss
    import numpy as np

    from study.config import IVFPQConfig, SearchConfig
    from study.core.ivf_params import recall_at_k
    from study.search.build import open_index
    from study.search.recall import measure_recall, sample_queries

    root = os.path.join(args.dir, f"n{n}-d{args.d}")
    shutil.rmtree(os.path.join(root, "index"), ignore_errors=True)  # time the build, not a reload
    public = ensure_set(os.path.join(root, "public"), n, args.d, 1, "p")
    queries = ensure_set(os.path.join(args.dir, f"q{args.nq}-d{args.d}"), args.nq, args.d, 3, "q")
    xb, xq = read_all(public, args.d), read_all(queries, args.d)
    measured_peak = gemm_peak(args.d)
    peak = measured_peak["gflops"]
    out = {"n": n, "d": args.d, "nq": args.nq, "k": args.k, "threads": args.threads, "shards": args.shards,
           "gemm_peak": measured_peak}
    log = lambda m: print(f"  [{n}] {m}", flush=True)  # noqa: E731

    # Plain FAISS, flat, one call.
    faiss.omp_set_num_threads(args.threads)
    flat = faiss.IndexFlatL2(args.d)
    flat.add(xb)
    flat.search(xq[:64], args.k)  # start the OpenMP pool outside the timing
    start = time.perf_counter()
    _, I_exact = flat.search(xq, args.k)
    out["faiss_flat"] = rate(args.nq, time.perf_counter() - start, n, args.d, peak, True)
    del flat

    common = dict(k=args.k, shards=args.shards, cpus_per_shard=args.threads / args.shards, shard_headroom_gb=0.25,
                  rows_per_file=args.nq, recall_queries=1000)
    def agreement(results) -> float:
        """recall@k against plain FAISS flat's answers (public ids are "p<row>")."""
        rows = np.array([[int(x[1:]) if x else -1 for x in row] for row in results], dtype=np.int64)
        return float(recall_at_k(rows, I_exact, args.k).mean())

    # The stage, flat.
    start = time.perf_counter()
    index, info = open_index(SearchConfig(index="flat", **common), public, os.path.join(root, "index"), log)
    out["stage_flat_open_s"] = round(time.perf_counter() - start, 1)
    try:
        index.search(xq[:64], args.k)  # warm every actor
        for b, (seconds, got) in stage_runs(index, queries, root, dict(index="flat", **common), args.batches, 0,
                                            "flat").items():
            out[f"stage_flat_b{b}"] = {**rate(args.nq, seconds, n, args.d, peak, True),
                                       "over_faiss": round(out["faiss_flat"]["seconds"] / seconds, 3),
                                       "recall_vs_faiss": round(agreement(got), 5)}
    finally:
        index.close()
    start = time.perf_counter()
    again, info2 = open_index(SearchConfig(index="flat", **common), public, os.path.join(root, "index"), log)
    out["stage_flat_reload_s"], out["stage_flat_reloaded"] = round(time.perf_counter() - start, 1), info2["shards_loaded"]
    again.close()

    if args.ivfpq:
        cfg = SearchConfig(index="ivfpq", ivf=IVFPQConfig(target_recall=0.9), **common)
        start = time.perf_counter()
        index, info = open_index(cfg, public, os.path.join(root, "index"), log)
        out["stage_ivfpq_open_s"] = round(time.perf_counter() - start, 1)
        p = info["index"]
        try:
            samples = sample_queries({"q": queries}, 1000, 0, normalize=True)
            nprobe, _ = measure_recall(index, samples, args.k, p["nlist"], 0, 0.9, log)
            index.search(xq[:64], args.k, nprobe)
            for b, (seconds, got) in stage_runs(index, queries, root, dict(index="ivfpq", ivf=cfg.ivf, **common),
                                                args.batches, nprobe, "ivfpq").items():
                out[f"stage_ivfpq_b{b}"] = {**rate(args.nq, seconds, n, args.d, peak, False),
                                            "recall10": round(agreement(got), 4)}
        finally:
            index.close()
        # Plain FAISS: one IndexIVFPQ of the same parameters, trained on a sample of the same size.
        from study.search.indexes import IndexParams, train_ivfpq

        params = IndexParams("ivfpq", args.d, p["nlist"], p["m"])
        sample = xb[np.random.default_rng(0).choice(n, min(n, p["train_size"]), replace=False)]
        start = time.perf_counter()
        plain = train_ivfpq(params, sample)
        plain.add(xb)
        build = time.perf_counter() - start
        plain.search(xq[:64], args.k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        start = time.perf_counter()
        _, I = plain.search(xq, args.k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        out["faiss_ivfpq"] = {**rate(args.nq, time.perf_counter() - start, n, args.d, peak, False),
                              "build_s": round(build, 1),
                              "recall10": round(float(recall_at_k(I, I_exact, args.k).mean()), 4)}
        out["ivfpq"] = {"nlist": p["nlist"], "m": p["m"], "nprobe": nprobe, "train_s": info["train_seconds"]}
        for b in args.batches:
            out[f"stage_ivfpq_b{b}"]["over_faiss"] = round(out[f"stage_ivfpq_b{b}"]["qps"] / out["faiss_ivfpq"]["qps"], 3)
    out["load_average_1_5_15"] = [round(x, 1) for x in os.getloadavg()]
    return out


def print_report(run: dict, batches: list[int]) -> None:
    print(f"\nN={run['n']:,} d={run['d']} nq={run['nq']} k={run['k']}, {run['threads']} threads, "
          f"{run['shards']} shard actors; GEMM peak {run['gemm_peak']['gflops']} GFLOP/s at "
          f"{run['gemm_peak']['shape']} (measured this run; host load {run['load_average_1_5_15']})")
    rows = [("plain FAISS flat, one call", run["faiss_flat"])]
    rows += [(f"stage flat, batches of {b}", run[f"stage_flat_b{b}"]) for b in batches]
    if "faiss_ivfpq" in run:
        v = run["ivfpq"]
        rows.append((f"plain FAISS IVF{v['nlist']},PQ{v['m']} nprobe {v['nprobe']}, one call", run["faiss_ivfpq"]))
        rows += [(f"stage IVF-PQ, batches of {b}", run[f"stage_ivfpq_b{b}"]) for b in batches]
    width = max(len(r[0]) for r in rows)
    print(f"{'path':<{width}}  {'queries/s':>10}  {'GFLOP/s':>8}  {'of peak':>7}  {'vs FAISS':>8}  recall@10")
    for name, r in rows:
        gf = f"{r['gflops']:.1f}" if "gflops" in r else "-"
        share = f"{r['of_peak']:.0%}" if "of_peak" in r else "-"
        over = f"{r['over_faiss']:.2f}x" if "over_faiss" in r else "1.00x"
        rec = r.get("recall10", r.get("recall_vs_faiss", 1.0))
        print(f"{name:<{width}}  {r['qps']:>10.1f}  {gf:>8}  {share:>7}  {over:>8}  {rec:.4f}")
    print(f"flat shards: opened (read + persisted) in {run['stage_flat_open_s']} s, reloaded in "
          f"{run['stage_flat_reload_s']} s ({run['stage_flat_reloaded']} shards loaded)"
          + (f"; IVF-PQ: trained {run['ivfpq']['train_s']} s, opened {run['stage_ivfpq_open_s']} s, plain FAISS "
             f"trained and built in {run['faiss_ivfpq']['build_s']} s" if "ivfpq" in run else ""))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000000")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--nq", type=int, default=4000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batches", default="250,1024", help="the stage's query batch sizes to time")
    p.add_argument("--ivfpq", action="store_true", help="also IVF-PQ (trains and builds: minutes at 1M)")
    p.add_argument("--dir", default="/tmp/search_bench")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    pin_blas_threads(args.threads)
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            runs.append(run_size(args, n))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        ray.shutdown()
    for run in runs:
        print_report(run, args.batches)
    return runs


if __name__ == "__main__":
    main()
