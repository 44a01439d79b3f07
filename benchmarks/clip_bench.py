"""CLIP-style training and embedding: the product's Ray edges vs bare open_clip loops, one run.

    python benchmarks/clip_bench.py [--model dejavu-tiny] [--size 32] [--pairs 400] [--epochs 4]
                                    [--batch 100] [--threads 2] [--public 400] [--embed-batch 256]

On the VLM quickstart's synthetic records (regenerated at ``--size`` px) it times:

* training: the same recipe (``recipes.clip_fit``: model, data, batch, optimiser, text handling)
  run as a bare loop in this process and through Ray Train (``driver.fit``, one worker with
  ``--threads`` CPUs and torch threads). Pairs/s come from the median epoch after the first
  (steady state); the Ray figure is also given end to end, start-up and checkpoints included.
* embedding: the public images through the image tower and the attacked captions through the
  text tower, by a bare loop (``encode_images``/``encode_texts`` on the decoded records) and by
  the embed stage's Ray Data pipeline (``embed_all`` with ``ClipEmbedder``, default pool sizing),
  the bare loop using as many torch threads as one replica gets. Ray Data's ~5 s fixed cost per
  pipeline is inside its end-to-end figure; rows/s are also given without it (the pipeline's
  time minus that of a one-row pipeline).

Prints a table and a JSON line with every number and the ratios (Ray / bare; goals: training
>= 0.85, embedding >= 0.8).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _prepare(out: str, args) -> tuple:
    from study.config_load import load_config
    from study.frame.context import RunContext
    from study.stages.data import run_data
    from study.stages.splits import run_splits

    n = args.pairs + args.public + args.pairs // 2  # target, public, and a little reference and holdout
    t, r = args.pairs / n, args.pairs / 4 / n
    overrides = [
        f"data.num_images={n}",
        f"data.image_size={args.size}",
        f"splits.fractions={{target: {t:.4f}, reference: {r:.4f}, holdout: {r:.4f}, public: {1 - t - 2 * r:.4f}}}",
        f"model.clip={args.model}",
        f"train.epochs={args.epochs}",
        "train.warmup_epochs=0",
        f"train.global_batch_size={args.batch}",
        f"train.checkpoint_every={args.epochs}",
        f"train.torch_threads={args.threads}",
        f"train.cpus_per_worker={args.threads}",
        f"embed.batch_size={args.embed_batch}",
    ]
    cfg = load_config("configs/quickstart-vlm.yaml", overrides, out)
    ctx = RunContext.create(cfg)
    run_data(ctx)
    run_splits(ctx)
    context = {"recipe": "clip", "data_root": ctx.data_root, "splits_dir": ctx.splits_dir, "num_classes": 10,
               "image_size": args.size}
    return cfg, ctx, context


def bench_train(cfg, ctx, context, args) -> dict:
    import ray
    import torch

    from study import storage
    from study.train import driver
    from study.train.recipes import clip_fit

    import logging

    # Ray is up for both runs, so its daemons cost the bare loop what they cost the workers.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # At least 2 CPUs: one CPU cannot hold an embedding replica and the read tasks at once.
    ray.init(address="local", num_cpus=max(2, args.threads), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fit = clip_fit({**context, "train": cfg.train, "model": cfg.model, "splits": ["target"]}, 0, 1)
    seconds = []
    for epoch in range(args.epochs):
        seconds.append(fit.run_epoch(fit.model, epoch, torch.Generator().manual_seed(epoch))["seconds"])
    out_dir = storage.join(ctx.run_dir, "bench_train")
    start = time.perf_counter()
    driver.fit(driver.TrainJob("model_a", ("target",), out_dir), cfg.train, cfg.model, context, use_gpu=False)
    ray_total = time.perf_counter() - start
    history = [json.loads(line) for line in storage.read_bytes(storage.join(out_dir, "metrics.jsonl")).decode().splitlines()]
    pairs = (args.pairs // args.batch) * args.batch  # pairs per epoch (the ragged last batch is dropped)
    # Median epoch after the first (warm-up): robust to a noisy neighbour on a shared machine.
    bare = pairs / statistics.median(seconds[1:])
    ray_steady = pairs / statistics.median([h["seconds"] for h in history[1:]])
    return {"pairs_per_epoch": pairs, "bare_pairs_s": bare, "ray_pairs_s": ray_steady,
            "ray_end_to_end_pairs_s": pairs * args.epochs / ray_total, "ratio": ray_steady / bare,
            "ratio_end_to_end": pairs * args.epochs / ray_total / bare, "model_uri": storage.join(out_dir, "model.pt")}


def bench_embed(cfg, ctx, model_uri: str, args) -> dict:
    import numpy as np
    import torch
    from functools import partial

    from study import storage
    from study.data import records
    from study.data.loading import read_split
    from study.core.split_plan import SplitPlan
    from study.embed.captions import IMAGE, TEXT, ClipEmbedder, prepare_vlm_batch
    from study.embed.pipeline import embed_all, pool_size
    from study.train.clip import encode_images, encode_texts, load_clip, tokenize

    actors, cpus = pool_size(cfg.embed)
    threads = max(1, int(cpus))
    pub_ids = list(read_split(ctx.splits_dir, "public")[0])
    q_ids = list(read_split(ctx.splits_dir, "target")[0])
    image_table = records.read_records(ctx.data_root, pub_ids, columns=["id", "image"])
    pngs = dict(zip(image_table.column("id").to_pylist(), image_table.column("image").to_pylist()))
    table = records.read_records(ctx.data_root, q_ids, columns=["id", "caption"])
    captions = dict(zip(table.column("id").to_pylist(), table.column("caption").to_pylist()))
    model, tok, _ = load_clip(storage.read_bytes(model_uri))

    def bare_loop(n_threads: int) -> float:
        """Rows/s decoding and embedding in memory (decoding is inside the Ray pipeline's time too)."""
        torch.set_num_threads(n_threads)
        start = time.perf_counter()
        x = torch.from_numpy(np.stack([records.decode_image(pngs[i]) for i in pub_ids])).permute(0, 3, 1, 2)
        for i in range(0, len(x), cfg.embed.batch_size):
            encode_images(model, x[i : i + cfg.embed.batch_size].contiguous())
        encode_texts(model, tokenize(tok, [captions[i] for i in q_ids]), batch_size=cfg.embed.batch_size)
        return (len(pub_ids) + len(q_ids)) / (time.perf_counter() - start)

    bare = bare_loop(threads)
    bare_all = bare_loop(args.threads)

    modes = {"public": IMAGE, "target": TEXT}

    def pipeline(out: str) -> tuple[int, float]:
        prepare = partial(prepare_vlm_batch, plan=SplitPlan(dict(cfg.splits.fractions), cfg.splits.seed), modes=modes,
                          image_size=cfg.data.image_size)
        start = time.perf_counter()
        written = embed_all(ctx.data_root, ["id", "image", "caption", "objects"], prepare, ClipEmbedder,
                            {"model_uris": {"model_a": model_uri}}, {s: (v,) for s, v in modes.items()}, cfg.embed,
                            out, use_gpu=False, log=lambda m, progress=None: None)
        return sum(written.values()), time.perf_counter() - start

    rows, ray_total = pipeline(storage.join(ctx.run_dir, "bench_embed"))
    assert rows == len(pub_ids) + len(q_ids), (rows, len(pub_ids), len(q_ids))
    fixed = _fixed_cost(ctx, cfg, model_uri)
    return {"rows": rows, "replicas": actors, "cpus_per_replica": cpus, "bare_threads": threads,
            "bare_rows_s": bare, "bare_all_threads_rows_s": bare_all,
            "ratio_vs_all_threads": rows / max(1e-9, ray_total - fixed) / bare_all, "ray_end_to_end_rows_s": rows / ray_total, "ray_fixed_s": fixed,
            "ray_rows_s": rows / max(1e-9, ray_total - fixed), "ratio": rows / max(1e-9, ray_total - fixed) / bare,
            "ratio_end_to_end": rows / ray_total / bare}


def _fixed_cost(ctx, cfg, model_uri: str) -> float:
    """Seconds of an embed pipeline that embeds nothing (every record read, none kept)."""
    from study.core.split_plan import SplitPlan
    from study.embed.captions import ClipEmbedder, IMAGE, prepare_vlm_batch
    from study.embed.pipeline import embed_all
    from study import storage
    from functools import partial

    prepare = partial(prepare_vlm_batch, plan=SplitPlan(dict(cfg.splits.fractions), cfg.splits.seed),
                      modes={"nothing": IMAGE}, image_size=cfg.data.image_size)
    start = time.perf_counter()
    embed_all(ctx.data_root, ["id", "image", "caption", "objects"], prepare, ClipEmbedder,
              {"model_uris": {"model_a": model_uri}}, {"nothing": ("image",)}, cfg.embed,
              storage.join(ctx.run_dir, "bench_fixed"), use_gpu=False, log=lambda m, progress=None: None)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dejavu-tiny")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--public", type=int, default=400)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embed-batch", type=int, default=256, help="embed.batch_size (rows per Ray Data batch)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is warm-up)")
    with tempfile.TemporaryDirectory() as out:
        cfg, ctx, context = _prepare(out, args)
        train = bench_train(cfg, ctx, context, args)
        embed = bench_embed(cfg, ctx, train.pop("model_uri"), args)
    print(f"\n{args.model} at {args.size} px, batch {args.batch}, {args.threads} threads")
    print(f"training  bare {train['bare_pairs_s']:8.1f} pairs/s   Ray Train {train['ray_pairs_s']:8.1f} pairs/s   "
          f"ratio {train['ratio']:.2f}   (end to end {train['ratio_end_to_end']:.2f})")
    print(f"embedding bare {embed['bare_rows_s']:8.1f} rows/s    Ray Data  {embed['ray_rows_s']:8.1f} rows/s    "
          f"ratio {embed['ratio']:.2f}   (end to end {embed['ratio_end_to_end']:.2f}, fixed {embed['ray_fixed_s']:.1f} s)")
    print(f"          bare on all {args.threads} threads {embed['bare_all_threads_rows_s']:8.1f} rows/s: "
          f"ratio {embed['ratio_vs_all_threads']:.2f}")
    print(json.dumps({"model": args.model, "size": args.size, "batch": args.batch, "threads": args.threads,
                      "train": {k: round(v, 3) if isinstance(v, float) else v for k, v in train.items()},
                      "embed": {k: round(v, 3) if isinstance(v, float) else v for k, v in embed.items()}}))


if __name__ == "__main__":
    main()
