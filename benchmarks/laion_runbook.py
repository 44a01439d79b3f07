"""The LAION-scale runbook's tables: cluster shape, each stage's time and memory and the pair's
training cost for the VLM study (open_clip ViT-B-32, 224 px) at 1M, 10M and 50M pairs on AWS.

    python benchmarks/laion_runbook.py [--sizes 1000000,10000000,50000000] [--epochs 32] [--util 0.4] [--measure]

Nothing here ran at these sizes, on a GPU or on a cloud: inputs measured on a 2-CPU machine
(constants naming their benchmark; ``--measure`` re-takes this script's own) and stated assumptions.
"""
from __future__ import annotations

import argparse

from ivfpq_bench import extrapolate, rates  # the search benchmark's own model (imports no Ray)

# -- measured on the 2-CPU machine (docs/results.md, "Performance") -------------------------------
TRAIN_PAIRS_S, TRAIN_RAY_PAIRS_S = 3.48, 3.34  # clip_bench: ViT-B-32 224 px, batch 32, 2 threads, bare / Ray Train
EMBED_ROWS_S, EMBED_RAY_ROWS_S = 10.5, 9.5  # clip_bench: ViT-B-32 embedding, 1 thread, bare / Ray Data
RESNET_IMAGES_S, RESNET_RAY_IMAGES_S = 20.4, 19.5  # embed_bench: ResNet-18 224 px, 2 CPUs, bare / Ray Data
TINY_RAY_ROWS_S = 3503  # clip_bench: dejavu-tiny through Ray Data, batch 1024, 1 prepare CPU: its cost a row
# The host clip_bench ran on: a (128, d) @ (d, nb) float32 product, 2 threads (the training's utilisation only)
GEMM_PEAK_GFLOPS = 183.0
# knn_bench, 2026-12-06 (a 2-core Intel Xeon host): Ray sharded exact k-NN (2 actors x 1 CPU), nb 200k
FLAT_GFLOPS_PER_CPU = 64.0 / 2
# ivfpq_bench --sizes 1000000,3000000,10000000, 2026-12-06 (the same host, load 1-2; d 128, 2 shard
# actors on BENCH_CPUS, every query batch on FAISS's BLAS path), its 10M run as run_size returns it
IVF_10M = {"n": 10_000_000, "d": 128, "flat": {"build_s": 9.0, "qps": 28.6},
           "ivfpq": {"nlist": 12649, "m": 64, "nprobe": 8, "train_size": 809536, "train_s": 355.85,
                     "build_s": 780.3, "qps": 4397.1, "shard_peak_rss_mib": [1966, 1951]}}
# driver_memory: the VLM quickstart over webdataset shards of 32 px images, 2 CPUs; seconds at
# STAGE_N records; measure with draws 200/200 (reduced), k 100, 10 object classes
STAGE_S = {"data": (16.6, 73.9), "splits": (22.8, 53.2), "measure": (2.4, 26.0)}
STAGE_N, BENCH_CPUS = (20_000, 200_000), 2
DRIVER_GIB = 1499 / 1024  # driver_memory: the driver's peak at 200k (1.11x the 20k peak)
# measured by this script (--measure), one CPU, host load 3-6 on its 2 CPUs (+-30 % between runs):
DECODE_INGEST_S = 1 / 3500  # 256 px JPEG (~30 KB): the data stage's draft decode (laion.inspect_image)
DECODE_224_S = 1 / 800  # the same, decoded and resized to 224 px as training and embedding do
# measure_bench (2026-12-07): the VLM measure stage in tasks on 2 CPUs, 10^6 attacked records, 4x10^6
# public, k 100, C = 21,000 Zipf objects (~5 an image), draws 1000 + 2000, 2 models, 1 space: stage
# 362.4 s on a host ~1.4x slower than on 2026-12-06 (scoring 245.1 s, statistics 117.3 s), driver
# 300 MiB flat, tasks' peak 2.4 GiB (the object tables' task; scoring 1.7 GiB, a statistics task
# 1.2 GiB); the same with measure.records_per_task = 250,000 (4 id ranges): statistics 126.3 s, a
# statistics task 0.66 GiB. C barely matters with sparse sets. Again on 2026-12-07 (a host ~1.8x
# slower than on 2026-12-06) with the per-record tables in blocks of id ranges: a block's task
# peaked at 2341 MiB with the public side's 4x10^6 records in one block and at 951 MiB with blocks
# of 10^6 records (measure.records_per_table_block); a scoring task at 1467 and 1112 MiB.
MEASURE_BENCH = {"records": 1_000_000, "cpus": 2, "stage_s": 362.4, "scoring_s": 245.1, "statistics_s": 117.3,
                 "tasks_gib": {"tables": 2341 / 1024, "score": 1467 / 1024, "statistics": 1211 / 1024}, "driver_mib": 300,
                 "ranged": {"records_per_task": 250_000, "statistics_gib": 679 / 1024},
                 "blocks": {"records": (1_000_000, 4_000_000), "gib": (951 / 1024, 2341 / 1024)}}
RECORDS_PER_TASK = 1_000_000  # measure.records_per_task's default: the records a statistics task holds
RECORDS_PER_TABLE_BLOCK = 5_000_000  # measure.records_per_table_block's default: a table block's records
RESULT_ROWS_PER_PART = 100_000  # search.rows_per_file: a scoring task's queries
# counted by this script (--measure) with torch.utils.flop_counter; open_clip's model table gives
# 4.41 / 2.96 "GFLOPs" for ViT-B-32, which are multiply-accumulates (half these figures)
IMAGE_GFLOP, TEXT_GFLOP, TRAIN_OVER_FORWARD = 8.73, 5.81, 2.98  # forward per image / 77-token caption
ACTIVATION_MB_PER_PAIR, PARAMS = 61.1, 151.3e6  # float32 tensors autograd saves per pair; parameters

# -- stated assumptions -------------------------------------------------------------------------
FRACTIONS = {"target": 0.15, "reference": 0.15, "holdout": 0.1, "public": 0.6}  # configs/quickstart-vlm.yaml
A10G_FP32_TFLOPS = 31.2  # NVIDIA A10 datasheet, A10G taken as equal; the product trains in float32
A10G_FP16_TFLOPS = 125.0  # dense FP16 tensor peak: needs mixed precision, which the product lacks
NODE_CPUS, NODE_SHARD_GIB, GPU_GIB = 8, 20.0, 22.5  # 8 vCPU, 32 GiB nodes (Ray `memory` ~20 GiB); A10G 24 GB
NET_GBYTES_S, BATCH_PER_GPU = 1.25, 256  # g5.2xlarge "up to 10 Gbit/s" bounds DDP's all-reduce
WORKERS_PER_MODEL = {1_000_000: 2, 10_000_000: 8, 50_000_000: 16}  # keeps the pair's training under ~a day
JPEG_KB, ID_BYTES, K = 30, 9, 100  # the LAION estimate (10-30 KB at 256 px); img2dataset keys; search.k
WORKER_PRICE = 1.212  # g5.2xlarge, USD/h on demand, us-east-1 list price (check yours; spot is cheaper)
HEADS = (("m6i.2xlarge", 32, 0.384), ("r6i.2xlarge", 64, 0.504), ("r6i.4xlarge", 128, 1.008),
         ("r6i.8xlarge", 256, 2.016), ("r6i.12xlarge", 384, 3.024))  # GiB, USD/h: must hold measure's arrays


def fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def linear(points: tuple[float, float], n: float) -> float:
    """The line through the two measured sizes (seconds at STAGE_N), at n records."""
    return points[0] + (points[1] - points[0]) / (STAGE_N[1] - STAGE_N[0]) * (n - STAGE_N[0])


def gpu_train_rate(util: float, workers: int) -> tuple[float, float, float]:
    """(pairs/s per GPU, compute s, all-reduce s a step): DDP overlaps the ring all-reduce of the
    float32 gradients with the backward pass, so a step takes the longer of the two."""
    alone = util * A10G_FP32_TFLOPS * 1e3 / (TRAIN_OVER_FORWARD * (IMAGE_GFLOP + TEXT_GFLOP))
    compute = BATCH_PER_GPU / (alone * TRAIN_RAY_PAIRS_S / TRAIN_PAIRS_S)  # Ray Train's measured overhead
    comm = 2 * (workers - 1) / workers * 4 * PARAMS / (NET_GBYTES_S * 1e9)
    return BATCH_PER_GPU / max(compute, comm), compute, comm


def search_cost(n_public: int, nq: int, nodes: int, d: int = 512) -> dict:
    """One model's index over a shard per node (search.cpus_per_shard=8): ivfpq_bench.extrapolate's
    parameters and memory, its measured per-CPU rates x work on all the cluster's CPUs (the high
    query time) and knn_bench's flat k-NN rate for the same flops (the other end of the range)."""
    e = extrapolate(IVF_10M, n_public, d, NODE_CPUS, NODE_SHARD_GIB, BENCH_CPUS)
    r, cpus, ivf = rates(IVF_10M, BENCH_CPUS), nodes * NODE_CPUS, e["ivfpq"]
    coarse, lists = nodes * ivf["nlist"] * d, ivf["nprobe_assumed"] * n_public / ivf["nlist"] * ivf["m"]
    gemm = FLAT_GFLOPS_PER_CPU * 1e9
    return {  # every shard scans all nlist centroids for every query: IVF's low end runs on one node's CPUs
        "flat": {**e["flat"], "build_s": r["flat_build"] * n_public * d / cpus,
                 "query_s": (nq * 2 * n_public * d / (cpus * gemm), nq * r["flat_query"] * n_public * d / cpus)},
        "ivfpq": {**ivf, "build_s": ivf["train_hours"] * 3600 + r["add"] * n_public * ivf["nlist"] * d / cpus,
                  "query_s": (nq * 2 * ivf["nlist"] * d / (NODE_CPUS * gemm), nq * r["ivf_query"] * (coarse + lists) / cpus)},
    }


def measure_cost(n: int, cpus: int) -> tuple[float, str]:
    """(s, memory text) of the measure stage, its tasks on the cluster's ``cpus``: measure_bench's
    CPU-seconds per attacked record (they grew 10.9x for 10x the records on 2026-12-06), the scoring
    spread over at most one task per part of search results, the statistics over at most one task
    per CPU (each reads one id range of at most measure.records_per_task records); the tasks' peaks:
    a table block's task set by its records (linear through the bench's blocks of 10^6 and 4x10^6
    records, at most measure.records_per_table_block), a statistics task's set by the records of its id
    range (linear through the bench's two runs, 10^6 and 250,000 records a task), a scoring task's
    by one part of search results, plus the tables it reads from the object store, shared by a
    node's tasks."""
    attacked, b = (1 - FRACTIONS["public"]) * n, MEASURE_BENCH
    scale = attacked / b["records"]
    parts = 2 * -(-attacked // RESULT_ROWS_PER_PART)  # two models' result parts (splits rounded up ignored)
    seconds = (b["scoring_s"] * b["cpus"] * scale / min(cpus, parts)
               + b["statistics_s"] * b["cpus"] * scale / cpus)
    (r0, r1), (g0, g1) = b["blocks"]["records"], b["blocks"]["gib"]
    block = min(FRACTIONS["public"] * n, RECORDS_PER_TABLE_BLOCK)  # the larger side's blocks
    tables = g0 + (g1 - g0) / (r1 - r0) * (block - r0)
    r = b["ranged"]
    slope = (b["tasks_gib"]["statistics"] - r["statistics_gib"]) / (b["records"] - r["records_per_task"])
    statistics = r["statistics_gib"] + slope * (min(attacked, RECORDS_PER_TASK) - r["records_per_task"])
    text = (f"driver {b['driver_mib'] / 1024:.2f} GiB; tasks: a table block's ~{tables:.1f} GiB (blocks of <= "
            f"{RECORDS_PER_TABLE_BLOCK / 1e6:g}M records a side, kept in the object store), "
            f"statistics ~{statistics:.1f} GiB (one id range each), scoring {b['tasks_gib']['score']:.1f} GiB "
            f"at the bench's 10^6 records, the tables it reads included")
    return seconds, text


def plan(n: int, args) -> tuple[list[tuple], dict]:
    w_model = WORKERS_PER_MODEL.get(n, max(1, round(n / 3_000_000)))
    workers, nodes = 2 * w_model, 2 * w_model + 1
    pub, nq = int(FRACTIONS["public"] * n), int((1 - FRACTIONS["public"]) * n)
    x, rows, t = "extrapolated: ", [], {}
    for stage, decode_s in (("data", DECODE_INGEST_S), ("splits", 0.0)):  # Ray Data tasks on every vCPU
        per = BENCH_CPUS * (STAGE_S[stage][1] - STAGE_S[stage][0]) / (STAGE_N[1] - STAGE_N[0]) + decode_s
        head, t[stage] = (linear(STAGE_S[stage], 0) + n * per / c for c in (NODE_CPUS, nodes * NODE_CPUS))
        spill = f"; the join spills ~{n * JPEG_KB / 2**20:,.0f} GiB to disk" if decode_s else ""
        rows.append((stage, f"{fmt_s(t[stage])} (head alone {fmt_s(head)})", f"driver {DRIVER_GIB:.1f} GiB{spill}",
                     x + "driver_memory's 20k-200k line per vCPU" + (" + draft decode" if decode_s else "")))
    rate, compute, comm = gpu_train_rate(args.util, w_model)
    t["train"] = FRACTIONS["target"] * n * args.epochs / (w_model * rate)
    gpu_gib = (16 * PARAMS + BATCH_PER_GPU * ACTIVATION_MB_PER_PAIR * 1e6) / 2**30  # weights, grads, Adam; saved
    rows.append((f"train A + B, {w_model}+{w_model} GPUs, {args.epochs} epochs", fmt_s(t["train"]),
                 f"GPU ~{gpu_gib:.0f} GiB + CUDA's own, of {GPU_GIB:g}; {rate:.0f} pairs/s a GPU; step {compute:.2f} s, "
                 f"all-reduce {comm:.2f} s", x + f"FLOPs / ({args.util:g} x A10G FP32 peak) x Ray's 0.96; 10 Gbit/s"))
    gpu_s = 2 * (pub * IMAGE_GFLOP + nq * TEXT_GFLOP) / (args.util * A10G_FP32_TFLOPS * 1e3) * EMBED_ROWS_S / EMBED_RAY_ROWS_S
    decode_s = pub * (DECODE_224_S + 1 / TINY_RAY_ROWS_S) / (NODE_CPUS / 2)  # 4 prepare CPUs a node
    t["embed"] = max(gpu_s, decode_s) / workers
    rows.append(("embed, 2 models", fmt_s(t["embed"]), f"GPU ~{2 * 4 * PARAMS / 2**30:.1f} GiB; writes "
                 f"{2 * n * 512 * 4 / 2**30:,.0f} GiB", x + f"FLOPs / ({args.util:g} x FP32 peak) x Ray's 0.90; "
                 f"decoding needs {decode_s / gpu_s:.0%} of that"))
    best = "flat" if n <= 1_000_000 else "ivfpq"
    for kind, e in search_cost(pub, nq, nodes).items():
        lo, hi = sorted(2 * (e["build_s"] + q) for q in e["query_s"])
        name = "flat (exact)" if kind == "flat" else f"IVF{e['nlist']},PQ{e['m']}, nprobe {e['nprobe_assumed']}"
        t["search"] = hi if kind == best else t.get("search", 0)
        rows.append((f"search, {name}{' **(use)**' if kind == best else ''}", f"{fmt_s(lo)} - {fmt_s(hi)}",
                     f"{e['index_gib']} GiB a model in {nodes} shards (fits in {e['shards']})",
                     x + "knn_bench's flat k-NN rate and ivfpq_bench's 10M rates (the range)"))
    t["measure"], memory = measure_cost(n, nodes * NODE_CPUS)
    head = HEADS[0]  # the driver holds aggregates only: the smallest head holds it
    rows.append(("measure (tasks)", fmt_s(t["measure"]), memory, x + "measure_bench's 10^6 run per CPU"))
    rows.append(("report", "< 1 min", f"driver {DRIVER_GIB:.1f} GiB", x + "driver_memory: 0.1 s at 20k and 200k"))
    wall = sum(t.values())
    worker_h = workers * (wall + 600) / 3600  # the measure's tasks run on the workers; given back 10 idle minutes later
    return rows, {"w_model": w_model, "workers": workers, "wall": wall, "gpu_h": 2 * w_model * t["train"] / 3600,
                  "worker_h": worker_h, "head": head, "cost": worker_h * WORKER_PRICE + wall / 3600 * head[2]}


def inputs(args) -> list[tuple]:
    """The measured inputs as rows, with the two checks they allow (CPU utilisation, A10G rate)."""
    train_gflop = TRAIN_OVER_FORWARD * (IMAGE_GFLOP + TEXT_GFLOP)
    embed_gflop = (256 * IMAGE_GFLOP + 257 * TEXT_GFLOP) / 513  # clip_bench's images and captions
    ivf, st = IVF_10M["ivfpq"], {k: f"{a} -> {b} s" for k, (a, b) in STAGE_S.items()}
    rate, m = gpu_train_rate(args.util, 1)[0], "measured: "
    return [
        ("ViT-B-32, 224 px: training (batch 32, 2 threads); embedding (1 thread)", f"{TRAIN_PAIRS_S} pairs/s bare, "
         f"{TRAIN_RAY_PAIRS_S} through Ray; {EMBED_ROWS_S} rows/s bare, {EMBED_RAY_ROWS_S} through Ray Data", m + "clip_bench"),
        ("ResNet-18 embedding, 224 px, 2 CPUs", f"{RESNET_IMAGES_S} images/s bare, {RESNET_RAY_IMAGES_S} through Ray Data", m + "embed_bench"),
        ("Ray flat k-NN, 2 threads (knn_bench's host, 2026-12-06)", f"{2 * FLAT_GFLOPS_PER_CPU:.0f} GFLOP/s", m + "knn_bench"),
        ("10M x 128 vectors, 2 shards on 2 CPUs", f"IVF{ivf['nlist']},PQ{ivf['m']}: train {ivf['train_s']:.0f} s, build "
         f"{ivf['build_s']:,.0f} s, {ivf['qps']:,.0f} q/s; flat {IVF_10M['flat']['qps']} q/s", m + "ivfpq_bench"),
        ("VLM quickstart, 20k -> 200k records, 2 CPUs", f"data {st['data']}, splits {st['splits']}, measure {st['measure']}; "
         f"driver peak {DRIVER_GIB:.2f} GiB", m + "driver_memory"),
        ("VLM measure stage, 10^6 attacked records, k 100, C = 21,000, 2 CPUs", f"{MEASURE_BENCH['stage_s']} s; driver "
         f"{MEASURE_BENCH['driver_mib']} MiB, tasks' peak {max(MEASURE_BENCH['tasks_gib'].values()):.1f} GiB", m + "measure_bench"),
        ("256 px JPEG (~30 KB), one CPU", f"{1 / DECODE_INGEST_S:,.0f}/s draft decode, {1 / DECODE_224_S:,.0f}/s decode + "
         "resize to 224", m + "this script, --measure"),
        ("ViT-B-32 per pair", f"forward {IMAGE_GFLOP} + {TEXT_GFLOP} GFLOP, training {TRAIN_OVER_FORWARD}x; "
         f"{ACTIVATION_MB_PER_PAIR} MB saved for backward", "counted: this script, --measure"),
        ("CPU utilisation", f"training {TRAIN_PAIRS_S * train_gflop:.0f} GFLOP/s = {TRAIN_PAIRS_S * train_gflop / GEMM_PEAK_GFLOPS:.0%}"
         f" of GEMM peak; embedding {EMBED_ROWS_S * embed_gflop / (GEMM_PEAK_GFLOPS / 2):.0%} of a thread's", "measured x counted"),
        ("A10G, float32, one GPU", f"{rate:.0f} pairs/s ({rate / TRAIN_RAY_PAIRS_S:.0f}x this machine through Ray); FP16 "
         f"tensor peak {A10G_FP16_TFLOPS / A10G_FP32_TFLOPS:.0f}x higher, unused", f"extrapolated: {args.util:g} x 31.2 TFLOP/s"),
    ]


def measure_inputs() -> None:
    """Re-take what this script measured: JPEG decode, ViT-B-32's FLOPs (~15 s)."""
    import io
    from timeit import timeit

    import numpy as np
    import open_clip
    import torch
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    from study.data.laion import inspect_image
    from study.data.records import decode_image
    from study.embed.views import resize

    rng, blobs = np.random.default_rng(0), []
    for _ in range(300):  # smooth colour fields plus noise: ~30 KB at quality 95, like LAION's 256 px
        img = np.asarray(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((256, 256), Image.BICUBIC))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
        blobs.append(buf.getvalue())
    for name, fn in (("draft decode", inspect_image), ("decode + resize 224", lambda b: resize(decode_image(b), 224))):
        print(f"{name}: {len(blobs) / timeit(lambda: [fn(b) for b in blobs], number=1):.0f} images/s on one CPU "
              f"({np.mean([len(b) for b in blobs]) / 1024:.0f} KB JPEGs)")
    torch.set_num_threads(1)
    model = open_clip.create_model("ViT-B-32", pretrained=None).train()  # train(): no fused attention path
    saved = {}

    def keep(t: torch.Tensor) -> torch.Tensor:  # autograd's saved tensors, by storage
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    img, txt, flops = torch.zeros(2, 3, 224, 224), torch.zeros(2, 77, dtype=torch.long), []
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        for fn in (lambda: model.encode_image(img), lambda: model.encode_text(txt)):
            with FlopCounterMode(display=False) as fc:
                flops.append((fc, fn()))
    with FlopCounterMode(display=False) as back:
        sum(out.sum() for _, out in flops).backward()
    fwd = [fc.get_total_flops() / 2e9 for fc, _ in flops]  # per pair: the batch holds 2
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    print(f"ViT-B-32 per pair: forward GFLOP image {fwd[0]:.2f}, text {fwd[1]:.2f}; training / forward "
          f"{1 + back.get_total_flops() / 2e9 / sum(fwd):.2f}; saved activations "
          f"{sum(v for k, v in saved.items() if k not in weights) / 2e6:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000000,10000000,50000000")
    p.add_argument("--epochs", type=int, default=32, help="per model (open_clip's LAION-400M B/32 recipe ran 32)")
    p.add_argument("--util", type=float, default=0.4, help="share of the A10G's FP32 peak reached (assumed)")
    p.add_argument("--measure", action="store_true", help="re-take this script's own measurements instead")
    args = p.parse_args(argv)
    if args.measure:
        return measure_inputs()
    print("| input | value | source |\n|---|---|---|")
    print("\n".join("| " + " | ".join(r) + " |" for r in inputs(args)))
    for n in (int(s) for s in args.sizes.split(",")):
        rows, tot = plan(n, args)
        print(f"\n#### N = {n:,} pairs: head {tot['head'][0]} ({tot['head'][1]} GiB) + {tot['workers']} g5.2xlarge "
              f"(train.num_workers={tot['w_model']}; max_workers >= {tot['workers']})\n")
        print("| stage | time | memory | source |\n|---|---|---|---|")
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
        print(f"| **study** | **{fmt_s(tot['wall'])}** | | extrapolated: the stages' sum (search: the high end) |")
        print(f"\nTraining the pair: {tot['gpu_h']:.0f} GPU-hours ({tot['gpu_h'] / args.epochs:.1f} an epoch). Whole study: "
              f"~{tot['worker_h']:.0f} worker-hours, ~${tot['cost']:,.0f} on demand at ${WORKER_PRICE}/h a g5.2xlarge "
              f"and ${tot['head'][2]}/h the head (extrapolated; prices assumed).")


if __name__ == "__main__":
    main()
