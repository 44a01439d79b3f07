"""Embedding extraction: the embed stage's Ray Data pipeline vs a bare PyTorch loop, one run.

    python benchmarks/embed_bench.py [--images 2000] [--cpus N] [--batch 256] [--size 224] [--source 256]

Records: ``--images`` smooth random scenes of ``--source`` px as JPEG bytes in record-schema
Parquet shards. Model: torchvision ResNet-18, random init, 512-d pooled features. Both sides read
the shards, decode the JPEG, resize to ``--size`` px (``views.resize``), normalise
(``models.normalize``) and run the forward pass in batches of ``--batch``:

* bare: one process, ``--cpus`` torch threads, decoding inline, batch after batch;
* Ray: the product's pipeline (``embed_all``: read -> prepare tasks -> replica pool -> write tasks
  that write the embedding shards) on a Ray instance of ``--cpus`` CPUs with the default pool
  sizing (``pool_size``), its embedder a class wrapping the same ResNet-18 weights.

Images/s: Ray end to end (start-up of the replicas and writing included) and without its fixed
cost (the time of a pipeline that keeps no record); bare over the same images, half measured
before and half after the Ray run so that drift on a shared machine falls on both. The
embeddings of both sides are compared. Prints a table and a JSON line; goal: ratio >= 0.8.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
import time
from functools import partial

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
import torchvision
from PIL import Image

from study import storage
from study.config import CropConfig, EmbedConfig
from study.data import records
from study.core.split_plan import SplitPlan
from study.embed.views import WHOLE, prepare_batch, resize
from study.train.models import normalize

MODEL = "resnet18"


def resnet18() -> torch.nn.Module:
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()  # 512-d pooled features
    return net.eval()


class ResNetEmbedder:
    """An embed-stage replica around ResNet-18: ``<model>/backbone`` per image of the batch."""

    def __init__(self, model_uris: dict[str, str], threads: int):
        torch.set_num_threads(threads)
        self.models = {}
        for name, uri in model_uris.items():
            self.models[name] = resnet18()
            self.models[name].load_state_dict(torch.load(io.BytesIO(storage.read_bytes(uri))))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = normalize(torch.from_numpy(np.ascontiguousarray(batch["pixels"])).permute(0, 3, 1, 2))
        out = {"id": batch["id"], "set": batch["set"]}
        with torch.inference_mode():
            for name, model in self.models.items():
                out[f"{name}/backbone"] = model(x).numpy()
        return out


def write_records(root: str, n: int, source: int, files: int = 8) -> None:
    """Smooth random colour fields (upscaled 16 px noise), JPEG quality 90, in ``files`` shards."""
    rng = np.random.default_rng(0)
    shard = -(-n // files)
    for start in range(0, n, shard):
        ids, images = [], []
        for i in range(start, min(n, start + shard)):
            small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            buf = io.BytesIO()
            small.resize((source, source), Image.BICUBIC).save(buf, format="JPEG", quality=90)
            ids.append(f"img-{i:07d}")
            images.append(buf.getvalue())
        k = len(ids)
        records.write_shard(storage.join(root, f"part-{start // shard:05d}.parquet"), {
            "id": ids, "image": images, "width": [source] * k, "height": [source] * k, "label": [None] * k,
            "boxes": [None] * k, "caption": [None] * k, "objects": [None] * k})


def bare_loop(shards: list[str], model: torch.nn.Module, batch: int, size: int) -> tuple[dict, float]:
    """Embeddings by id and seconds: read, decode, resize, normalise, forward, in this process."""
    out, start = {}, time.perf_counter()
    fs, paths = storage.arrow_fs_paths(shards)
    for b in pads.dataset(paths, filesystem=fs, format="parquet").to_batches(columns=["id", "image"], batch_size=batch):
        pixels = np.stack([resize(records.decode_image(d), size) for d in b.column("image").to_pylist()])
        with torch.inference_mode():
            h = model(normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2))).numpy()
        out.update(zip(b.column("id").to_pylist(), h))
    return out, time.perf_counter() - start


def ray_pipeline(root: str, uri: str, cfg: EmbedConfig, size: int, out: str, modes: dict) -> tuple[dict, float]:
    from study.embed.pipeline import embed_all

    prepare = partial(prepare_batch, plan=SplitPlan({"public": 1.0}, 0), modes=modes, crop_cfg=CropConfig(),
                      image_size=size)
    start = time.perf_counter()
    written = embed_all(root, ["id", "image", "width", "height", "label", "boxes"], prepare, ResNetEmbedder,
                        {"model_uris": {MODEL: uri}}, {"public": ("backbone",)}, cfg, out, log=lambda m, progress=None: None)
    return written, time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="Ray's CPUs, and the bare loop's torch threads")
    p.add_argument("--batch", type=int, default=EmbedConfig().batch_size, help="embed.batch_size, and the bare loop's")
    p.add_argument("--size", type=int, default=224, help="model input size (px)")
    p.add_argument("--source", type=int, default=256, help="stored image size (px)")
    args = p.parse_args(argv)
    import ray

    from study.embed.pipeline import pool_size

    with tempfile.TemporaryDirectory() as tmp:
        data, uri = storage.join(tmp, "records"), storage.join(tmp, "resnet18.pt")
        write_records(data, args.images, args.source)
        torch.manual_seed(0)
        model = resnet18()
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        storage.write_bytes(uri, buf.getvalue())
        shards = records.shard_uris(data)
        half = len(shards) // 2 or 1

        # Ray is up for the bare loop too, so its daemons cost both sides alike.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        cfg = EmbedConfig(batch_size=args.batch)
        replicas, cpus = pool_size(cfg, ray.cluster_resources())
        torch.set_num_threads(args.cpus)

        bare, t_bare = bare_loop(shards[:half], model, args.batch, args.size)
        written, t_ray = ray_pipeline(data, uri, cfg, args.size, storage.join(tmp, "embed"), {"public": WHOLE})
        rest, t_rest = bare_loop(shards[half:], model, args.batch, args.size)
        bare.update(rest)
        t_bare += t_rest
        _, t_fixed = ray_pipeline(data, uri, cfg, args.size, storage.join(tmp, "fixed"), {"nothing": WHOLE})

        files = storage.list_files(storage.join(tmp, "embed", MODEL, "public", "backbone"))
        table = pq.read_table(files)
        ids = table.column("id").to_pylist()
        emb = table.column("embedding").combine_chunks().values.to_numpy().reshape(len(ids), -1)
        n_files = len(files)
        assert written[(MODEL, "public", "backbone")] == len(ids) == len(set(ids)) == args.images
        max_diff = float(np.abs(emb - np.stack([bare[i] for i in ids])).max())
        ray.shutdown()

    bare_s = args.images / t_bare
    ray_s, ray_steady = args.images / t_ray, args.images / max(1e-9, t_ray - t_fixed)
    result = {
        "images": args.images, "size": args.size, "source": args.source, "batch": args.batch, "cpus": args.cpus,
        "ray_replicas": replicas, "ray_cpus_per_replica": cpus, "ray_threads_per_replica": max(1, int(cpus)),
        "bare_threads": args.cpus, "bare_images_s": round(bare_s, 2), "ray_images_s": round(ray_s, 2),
        "ray_fixed_s": round(t_fixed, 1), "ray_steady_images_s": round(ray_steady, 2),
        "ratio": round(ray_s / bare_s, 3), "ratio_steady": round(ray_steady / bare_s, 3),
        "files": n_files, "max_abs_diff": max_diff,
    }
    print(f"\nResNet-18 (random init) at {args.size} px from {args.source} px JPEG, {args.images} images, "
          f"batch {args.batch}, {args.cpus} CPUs")
    print(f"bare loop   {bare_s:8.1f} images/s   ({args.cpus} torch threads, decoding inline)")
    print(f"Ray Data    {ray_s:8.1f} images/s   ({args.cpus} Ray CPUs: {replicas} replica(s) x {cpus:g} CPU, "
          f"{max(1, int(cpus))} thread(s) each; decoding in Ray Data tasks; {n_files} file(s) written)")
    print(f"ratio       {ray_s / bare_s:8.2f}            (goal >= 0.8; without Ray's fixed {t_fixed:.1f} s: "
          f"{ray_steady / bare_s:.2f})   max |Ray - bare| = {max_diff:.1e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
