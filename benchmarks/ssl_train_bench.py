"""SSL training: the product's Ray Train edge vs a bare PyTorch loop, and images/s per method, one run.

    python benchmarks/ssl_train_bench.py [--method simclr] [--backbone small_cnn] [--size 32]
                                         [--images 1000] [--epochs 4] [--batch 125] [--threads 2]

On the SSL quickstart's synthetic records (regenerated at ``--size`` px) it times:

* the same recipe (``recipes.ssl_fit``: model, data, batch, optimiser, views, loss, teacher) run as
  a bare loop in this process and through Ray Train (``driver.fit``, one worker with ``--threads``
  CPUs and torch threads). Images/s come from the median epoch after the first (steady state);
  the Ray figure is also given end to end, start-up and checkpoints included. Goal: ratio >= 0.85.
* images/s per method (bare loop, same data and batch), every method of the registry.

Prints a table and a JSON line with every number.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def _prepare(out: str, args) -> tuple:
    from study.config_load import load_config
    from study.frame.context import RunContext
    from study.stages.data import run_data
    from study.stages.splits import run_splits

    n = args.images * 2
    overrides = [
        f"data.num_images={n}", f"data.image_size={args.size}",
        "splits.fractions={target: 0.5, reference: 0.1, holdout: 0.1, public: 0.3}",
        f"model.backbone={args.backbone}", f"train.method={args.method}", f"train.epochs={args.epochs}",
        f"train.global_batch_size={args.batch}", f"train.checkpoint_every={args.epochs}",
        f"train.torch_threads={args.threads}", f"train.cpus_per_worker={args.threads}",
    ]
    cfg = load_config("configs/quickstart.yaml", overrides, out)
    ctx = RunContext.create(cfg)
    run_data(ctx)
    run_splits(ctx)
    context = {"recipe": "ssl", "data_root": ctx.data_root, "splits_dir": ctx.splits_dir,
               "num_classes": cfg.data.num_classes, "image_size": args.size}
    return cfg, ctx, context


def _bare(cfg, context, method: str, epochs: int) -> tuple[list[float], int]:
    import dataclasses

    import torch

    from study.train.recipes import ssl_fit

    train = dataclasses.replace(cfg.train, method=method, params={})
    torch.manual_seed(0)
    fit = ssl_fit({**context, "train": train, "model": cfg.model, "splits": ["target"]}, 0, 1)
    seconds = [fit.run_epoch(fit.model, e, torch.Generator().manual_seed(e))["seconds"] for e in range(epochs)]
    return seconds, fit.scheduler.last_epoch // epochs * max(2, train.global_batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--backbone", default="small_cnn")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--images", type=int, default=1000, help="training images per epoch (about)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=125)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import ray
    import ray.data
    import torch

    from study import storage
    from study.train import driver
    from study.train.methods import METHODS

    # Ray is up for both runs, so its daemons cost the bare loop what they cost the worker.
    ray.init(address="local", num_cpus=max(2, args.threads), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as out:
        cfg, ctx, context = _prepare(out, args)
        torch.set_num_threads(args.threads)
        seconds, images = _bare(cfg, context, args.method, args.epochs)
        bare = images / statistics.median(seconds[1:])
        out_dir = storage.join(ctx.run_dir, "bench_train")
        start = time.perf_counter()
        driver.fit(driver.TrainJob("model_a", ("target",), out_dir), cfg.train, cfg.model, context, use_gpu=False)
        total = time.perf_counter() - start
        history = [json.loads(x) for x in storage.read_bytes(storage.join(out_dir, "metrics.jsonl")).decode().splitlines()]
        ray_steady = images / statistics.median([h["seconds"] for h in history[1:]])
        per_method = {}
        for name in METHODS:
            s, n = _bare(cfg, context, name, 2)
            per_method[name] = n / s[1]
        ray.shutdown()
    result = {"method": args.method, "backbone": args.backbone, "size": args.size, "images_per_epoch": images,
              "batch": args.batch, "threads": args.threads, "bare_images_s": bare, "ray_images_s": ray_steady,
              "ray_end_to_end_images_s": images * args.epochs / total, "ratio": ray_steady / bare,
              "ratio_end_to_end": images * args.epochs / total / bare, "per_method_images_s": per_method}
    print(f"{args.method} on {args.backbone}, {args.size} px, batch {args.batch}, {images} images/epoch, "
          f"{args.threads} threads")
    print(f"  bare loop          {bare:8.0f} images/s")
    print(f"  Ray Train (steady) {ray_steady:8.0f} images/s   ratio {ray_steady / bare:.2f} (goal >= 0.85)")
    print(f"  Ray Train (total)  {result['ray_end_to_end_images_s']:8.0f} images/s   "
          f"ratio {result['ratio_end_to_end']:.2f} (start-up and checkpoints included)")
    for name, v in per_method.items():
        print(f"  {name:<13} {v:8.0f} images/s (bare loop)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
