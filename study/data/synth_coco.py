"""Write the synthetic generator's records as a COCO dataset, one Ray task per shard.

Layout under ``output``:

- ``images/<record id>.png``: the generator's PNG bytes, unchanged (so pixels compare exactly);
  with photographic backgrounds (``data.background: photo``) ``<record id>.jpg``, JPEG as
  photographs are stored;
- ``annotations/instances.json``: images, one annotation per object box (bbox [x, y, w, h] in
  pixels, category_id) and categories;
- ``annotations/captions.json``: images and one caption annotation per image.

Ids: record ``i`` (generator id ``syn-<seed>-<i:08d>``) becomes COCO image ``i + 1`` with
``file_name`` ``<generator id>.png``, so a COCO reader's record id is ``str(i + 1)`` and the
generator's id is the file name's stem. Class ``c`` is category ``1 + 2c``, named
``synthetic.class_name(c)``: ids that are neither contiguous nor zero-based, as in COCO itself,
map back to label ``c`` by their rank. Annotation ids are numbered in record order, so the files
do not depend on the order in which shards finish.
"""
from __future__ import annotations

import json
import math
from typing import Callable

from study import storage
from study.config import DataConfig
from study.data import synth_write, synthetic


def _extension(cfg: DataConfig) -> str:
    return "jpg" if cfg.background == "photo" else "png"


def category_id(c: int) -> int:
    return 1 + 2 * c


def image_entries(cfg: DataConfig, shard: int, cols: dict[str, list]) -> list[dict]:
    """Per record of the shard: its COCO image entry, object boxes and caption (ids assigned later)."""
    start = shard * cfg.shard_size
    out = []
    for j, (rid, w, h, boxes, caption) in enumerate(
            zip(*(cols[c] for c in ("id", "width", "height", "boxes", "caption")))):
        image = {"id": start + j + 1, "file_name": f"{rid}.{_extension(cfg)}", "width": w, "height": h}
        # The generator's box corners are NumPy integers, which JSON does not take.
        objects = [{"category_id": category_id(b["label"]),
                    "bbox": [int(b["x0"]), int(b["y0"]), int(b["x1"] - b["x0"]), int(b["y1"] - b["y0"])]}
                   for b in boxes]
        out.append({"image": image, "objects": objects, "caption": caption})
    return out


def write_coco_shard(cfg: DataConfig, images_uri: str, shard: int) -> list[dict]:
    """Generate one shard, write its images and return its entries (``image_entries``)."""
    cols = synth_write.shard_columns(cfg, shard)
    ext = _extension(cfg)
    for rid, png in zip(cols["id"], cols["image"]):
        storage.write_bytes(storage.join(images_uri, f"{rid}.{ext}"), synth_write.to_jpeg(png) if ext == "jpg" else png)
    return image_entries(cfg, shard, cols)


def coco_documents(cfg: DataConfig, entries: list[dict]) -> tuple[dict, dict]:
    """(instances, captions) documents of all records' entries, in record order."""
    images = [e["image"] for e in entries]
    instances, captions = [], []
    for e in entries:
        image_id = e["image"]["id"]
        for obj in e["objects"]:
            w, h = obj["bbox"][2:]
            instances.append({"id": len(instances) + 1, "image_id": image_id, **obj, "area": w * h, "iscrowd": 0})
        captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": e["caption"]})
    categories = [{"id": category_id(c), "name": synthetic.class_name(c)} for c in range(cfg.num_classes)]
    return ({"images": images, "annotations": instances, "categories": categories},
            {"images": images, "annotations": captions})


def write_coco(cfg: DataConfig, output: str, progress: Callable[[int, int, int], None] | None = None,
               task_cpus: float = 1.0) -> dict:
    """Write ``cfg.num_images`` records under ``output`` as a COCO dataset, one Ray task per shard
    with at most a few tasks in flight per CPU; ``progress(shards_done, shards, records_done)`` is
    called as shards finish. The driver holds every record's JSON entry (no image bytes) until the
    annotation files are written, as a COCO file must be written whole."""
    import ray

    shards = math.ceil(cfg.num_images / cfg.shard_size)
    images_uri = storage.join(output, "images")
    task = ray.remote(write_coco_shard).options(num_cpus=task_cpus)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / task_cpus))
    pending, submitted, by_shard, written = {}, 0, {}, 0
    while len(by_shard) < shards:
        while submitted < shards and len(pending) < window:
            pending[task.remote(cfg, images_uri, submitted)] = submitted
            submitted += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        by_shard[shard] = ray.get(ready[0])
        written += len(by_shard[shard])
        if progress:
            progress(len(by_shard), shards, written)
    instances, captions = coco_documents(cfg, [e for s in range(shards) for e in by_shard[s]])
    uris = {name: storage.join(output, "annotations", f"{name}.json") for name in ("instances", "captions")}
    for name, doc in (("instances", instances), ("captions", captions)):
        storage.write_bytes(uris[name], json.dumps(doc).encode())
    return {"format": "coco", "path": output, "records": cfg.num_images, **uris}
