"""Annotation: the annotate stage (Ray Data actor pool) vs a bare loop of the same detector, one run.

    python benchmarks/annotate_bench.py [--images 120] [--cpus N] [--batch 4] [--image-size 320] [--shards 8]
        [--annotator torchvision|transformers]

Records: ``--images`` crops of the shipped photographs (``study.data.photos``) at several sizes and
aspect ratios (192-480 px on a side) as JPEG bytes in ``--shards`` record-schema Parquet shards. Model:
torchvision's Faster R-CNN ResNet-50 FPN (41 M parameters; random weights, its classifier scaled
so that it finds objects above the 0.5 threshold), resized to ``--image-size`` px (its shorter
side), over the COCO vocabulary; or, with ``--annotator transformers``, OWL-ViT base (patch 32,
768 px; random weights) over the COCO vocabulary's 80 names. Both sides read the shards, decode the JPEG and run the detector
in batches of ``--batch`` with the published thresholds:

* bare: one process, ``--cpus`` torch threads, the annotator called batch after batch;
* stage: ``dejavu run --until annotate`` on a Ray instance of ``--cpus`` CPUs (the data stage
  first, untimed), one replica of ``--cpus`` CPUs, writing the side table and the annotated
  records; timed as the annotate stage's own seconds (its marker), the replica's start included.

The bare loop runs half its shards before and half after the stage, so that drift on a shared
machine falls on both. The objects both sides found are compared. Prints a table and a JSON line;
goal: ratio >= 0.8.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from study import storage
from study.annotate.annotators import TorchvisionDetector, TransformersDetector
from study.annotate.detections import Thresholds
from study.annotate.vocabulary import coco
from study.data import records
from study.data.photos import PHOTOS, photo

ARCH = "fasterrcnn_resnet50_fpn"
SIZES = [(480, 320), (320, 480), (400, 400), (256, 192), (384, 288)]


def write_records(root: str, n: int, shards: int) -> None:
    """Crops of the shipped photographs (60-100 % of each side), resized to ``SIZES`` in turn."""
    rng, per = np.random.default_rng(0), -(-n // shards)
    for start in range(0, n, per):
        rows = {c: [] for c in records.RECORD_SCHEMA.names}
        for i in range(start, min(n, start + per)):
            w, h = SIZES[i % len(SIZES)]
            buf = io.BytesIO()
            full = photo(i % len(PHOTOS))
            ch, cw = (int(d * rng.uniform(0.6, 1.0)) for d in full.shape[:2])
            y, x = int(rng.integers(full.shape[0] - ch + 1)), int(rng.integers(full.shape[1] - cw + 1))
            crop = Image.fromarray(full[y:y + ch, x:x + cw]).convert("RGB")
            crop.resize((w, h), Image.BICUBIC).save(buf, format="JPEG", quality=90)
            for c, v in zip(records.RECORD_SCHEMA.names, (f"img-{i:06d}", buf.getvalue(), w, h, None, None, None, None)):
                rows[c].append(v)
        records.write_shard(storage.join(root, f"part-{start // per:05d}.parquet"), rows)


def detector_weights(path: str) -> None:
    import torchvision.models.detection as detection

    torch.manual_seed(0)
    model = getattr(detection, ARCH)(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():  # random weights that find objects at scores around the threshold
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    torch.save(model.state_dict(), path)


def owl_folder(folder: str) -> None:
    """OWL-ViT base (patch 32, 768 px: its library's default config) with random weights, saved
    with its processor (CLIP's tokenizer from open_clip's vocabulary: nothing is downloaded)."""
    import pathlib
    import sys

    import transformers as tf

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from test_hf_detectors import clip_tokenizer

    torch.manual_seed(0)
    tf.OwlViTForObjectDetection(tf.OwlViTConfig()).eval().save_pretrained(folder)
    tf.OwlViTProcessor(image_processor=tf.OwlViTImageProcessor(),
                       tokenizer=clip_tokenizer(pathlib.Path(folder))).save_pretrained(folder)


def bare_loop(shards: list[str], annotator, batch: int) -> tuple[dict, float]:
    """Objects by id and seconds: read, decode, detect, keep, in this process."""
    out, start = {}, time.perf_counter()
    for shard in shards:
        for b in pq.ParquetFile(storage.open_read(shard)).iter_batches(batch_size=batch, columns=["id", "image"]):
            images = [Image.open(io.BytesIO(d)).convert("RGB") for d in b.column("image").to_pylist()]
            for i, det in zip(b.column("id").to_pylist(), annotator(images)):
                out[i] = det.objects.tolist()
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="Ray's CPUs, the replica's and the bare loop's threads")
    p.add_argument("--batch", type=int, default=4, help="annotate.batch_size, and the bare loop's")
    p.add_argument("--image-size", type=int, default=320, help="the detector's resize (shorter side, px)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--annotator", default="torchvision", choices=["torchvision", "transformers"],
                   help="torchvision's Faster R-CNN, or OWL-ViT base at 768 px (its default config) through transformers")
    args = p.parse_args(argv)
    import ray

    from study.config_load import load_config
    from study.frame.context import RunContext, read_marker
    from study.frame.runner import run_study

    with tempfile.TemporaryDirectory() as tmp:
        data, weights = storage.join(tmp, "records"), storage.join(tmp, "detector.pt")
        write_records(data, args.images, args.shards)
        if args.annotator == "transformers":
            weights = storage.join(tmp, "owlvit")
            owl_folder(weights)
        else:
            detector_weights(weights)
        shards = records.shard_uris(data)
        half = len(shards) // 2 or 1
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        torch.set_num_threads(args.cpus)
        annotator = TransformersDetector(weights, coco(), Thresholds()) if args.annotator == "transformers" else \
            TorchvisionDetector(weights, coco(), Thresholds(), ARCH, args.image_size)

        bare, t_bare = bare_loop(shards[:half], annotator, args.batch)
        cfg = load_config(None, ["data.source=parquet", f"data.path={data}", f"annotate.annotator={args.annotator}",
                                 f"annotate.weights={weights}",
                                 f"annotate.architecture={ARCH if args.annotator == 'torchvision' else ''}",
                                 f"annotate.image_size={args.image_size}", f"annotate.batch_size={args.batch}",
                                 f"annotate.cpus_per_replica={args.cpus}"], storage.join(tmp, "runs"))
        run_study(cfg, until="annotate")
        marker = read_marker(RunContext.create(cfg).stage_dir("annotate"))
        t_stage = marker["seconds"]
        rest, t_rest = bare_loop(shards[half:], annotator, args.batch)
        bare.update(rest)
        t_bare += t_rest
        side = pq.read_table(RunContext.create(cfg).annotations).to_pylist()
        names = coco().names
        stage = {r["key"]: sorted({names.index(o) for o in r["objects"]}) for r in side}
        differ = sum(stage[i] != sorted(set(objs)) for i, objs in bare.items())
        found = sum(len(r["objects"]) for r in side)
        ray.shutdown()

    bare_s, stage_s = args.images / t_bare, args.images / t_stage
    model = ARCH if args.annotator == "torchvision" else "owlvit-base-patch32 (768 px)"
    size = args.image_size if args.annotator == "torchvision" else 768
    result = {"images": args.images, "image_size": size, "batch": args.batch, "cpus": args.cpus,
              "model": model, "bare_images_s": round(bare_s, 3), "stage_images_s": round(stage_s, 3),
              "ratio": round(stage_s / bare_s, 3), "objects_found": found, "images_whose_objects_differ": differ}
    print(f"\n{model} (random weights) at {size} px, {args.images} photographs of 192-480 px, batch "
          f"{args.batch}, {args.cpus} CPUs")
    print(f"bare loop   {bare_s:8.3f} images/s   ({args.cpus} torch threads)")
    print(f"stage       {stage_s:8.3f} images/s   (one replica of {args.cpus} CPUs; its start and the writes included)")
    print(f"ratio       {stage_s / bare_s:8.2f}            (goal >= 0.8); {found} objects found, "
          f"{differ} image(s) whose objects differ between the two")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
