"""The training recipe and the embedding forward pass on whatever device is present.

    python benchmarks/gpu_check.py [--method supervised] [--epochs 20] [--images 2000]

No Ray: it exercises the plain-PyTorch parts that Ray Train workers and Ray Data replicas run
(model, method, batched augmentation, epoch loop, inference), on CUDA when available and on the
CPU for comparison, and prints images/s for each plus the final losses.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from study.config import DataConfig, ModelConfig, TrainConfig
from study.data.records import decode_image
from study.data.synthetic import make_record
from study.train import loop
from study.train.methods import METHODS, method_params
from study.train.models import build_encoder, normalize


def dataset(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = DataConfig(num_images=n)
    rows = [make_record(i, cfg) for i in range(n)]
    images = np.stack([decode_image(r["image"]) for r in rows]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.tensor([r["label"] for r in rows])


def run(device: str, method: str, epochs: int, images: torch.Tensor, labels: torch.Tensor, backbone: str) -> dict:
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, epochs=epochs, global_batch_size=250)
    params = method_params(method, {})
    enc = build_encoder(ModelConfig(backbone=backbone), method, params, 10).to(device)
    opt = loop.make_optimizer(enc, cfg)
    sched = loop.make_scheduler(opt, cfg, loop.steps_per_epoch(len(images), cfg.global_batch_size))
    if device == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    start = time.perf_counter()
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        batches = loop.memory_batches(cfg.global_batch_size, gen, images, labels)
        m = loop.train_epoch(enc, METHODS[method], params, batches, opt, sched, cfg, gen)
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    enc.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), 500):
            enc(normalize(images[i : i + 500].to(device)))
    if device == "cuda":
        torch.cuda.synchronize()
    embed_s = time.perf_counter() - start
    return {"device": device, "train_images_per_s": round(epochs * len(images) / train_s),
            "embed_images_per_s": round(len(images) / embed_s), "final_loss": round(m["loss"], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="supervised", choices=sorted(METHODS))
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--cpu-epochs", type=int, default=2)
    args = p.parse_args()
    images, labels = dataset(args.images)
    results = [run("cpu", args.method, args.cpu_epochs, images, labels, args.backbone)]
    if torch.cuda.is_available():
        results.append(run("cuda", args.method, args.epochs, images, labels, args.backbone))
        results[-1]["gpu"] = torch.cuda.get_device_name()
    for r in results:
        print(json.dumps({"method": args.method, "backbone": args.backbone, **r}))


if __name__ == "__main__":
    main()
