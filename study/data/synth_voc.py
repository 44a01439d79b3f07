"""Write the synthetic generator's records as ImageNet-style class folders with Pascal-VOC XML boxes,
one Ray task per shard.

Layout under ``output`` (what ``study.data.voc`` reads):

- ``images/<class folder>/<record id>.png``: the generator's PNG bytes, unchanged (pixels compare
  exactly), so a VOC reader's record id (the file stem) is the generator's id;
- ``Annotation/<class folder>/<record id>.xml``: one VOC annotation per image, one ``<object>`` per
  box, corners 1-based inclusive (``xmin = x0 + 1, ymin = y0 + 1, xmax = x1, ymax = y1``: the
  generator's boxes are half-open integer pixel boxes).

An image goes in the folder of its label (its first object's class). Class folders are the reader's
label order once sorted by name, and ``synthetic.class_name`` does not sort in label order ("eight"
< "one"), so class ``c``'s folder is ``class_folder(c, C)``: ``c`` zero-padded to the width of
``C - 1``, then the name, e.g. ``03-three``. Objects' ``<name>`` are folder names too, so the
reader gives each box its class and the objects come back as folder names.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Callable

from study import storage
from study.config import DataConfig
from study.data import synth_write, synthetic


def class_folder(c: int, num_classes: int) -> str:
    return f"{c:0{len(str(num_classes - 1))}d}-{synthetic.class_name(c)}"


def voc_xml(folder: str, file_name: str, width: int, height: int, objects: list[tuple[str, dict]]) -> bytes:
    """A VOC annotation of one image: (object name, half-open integer box {x0, y0, x1, y1}) each."""
    root = ET.Element("annotation")
    for tag, text in (("folder", folder), ("filename", file_name)):
        ET.SubElement(root, tag).text = text
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(v))
    for name, b in objects:
        obj = ET.SubElement(root, "object")
        for tag, text in (("name", name), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = text
        bndbox = ET.SubElement(obj, "bndbox")
        corners = (int(b["x0"]) + 1, int(b["y0"]) + 1, int(b["x1"]), int(b["y1"]))
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), corners):
            ET.SubElement(bndbox, tag).text = str(v)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_voc_shard(cfg: DataConfig, output: str, shard: int) -> int:
    """Generate one shard and write its images and annotations; returns its number of records."""
    cols = synth_write.shard_columns(cfg, shard)
    folder = lambda c: class_folder(c, cfg.num_classes)  # noqa: E731
    for rid, png, w, h, label, boxes in zip(*(cols[c] for c in ("id", "image", "width", "height", "label", "boxes"))):
        storage.write_bytes(storage.join(output, "images", folder(label), f"{rid}.png"), png)
        xml = voc_xml(folder(label), f"{rid}.png", w, h, [(folder(b["label"]), b) for b in boxes])
        storage.write_bytes(storage.join(output, "Annotation", folder(label), f"{rid}.xml"), xml)
    return len(cols["id"])


def write_voc(cfg: DataConfig, output: str, progress: Callable[[int, int, int], None] | None = None,
              task_cpus: float = 1.0) -> dict:
    """Write ``cfg.num_images`` records under ``output`` in the VOC layout, one Ray task per shard with
    at most a few tasks in flight per CPU; ``progress(shards_done, shards, records_done)`` is called
    as shards finish. Every class gets its image folder, even one no record falls in, so the
    reader's label order is the generator's (on an object store, which has no empty folders, a
    class without records has no folder: write enough records for every class to have one)."""
    import ray

    images, annotations = storage.join(output, "images"), storage.join(output, "Annotation")
    for c in range(cfg.num_classes):
        storage.makedirs(storage.join(images, class_folder(c, cfg.num_classes)))
    shards = math.ceil(cfg.num_images / cfg.shard_size)
    task = ray.remote(write_voc_shard).options(num_cpus=task_cpus)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / task_cpus))
    pending, submitted, done, written = [], 0, 0, 0
    while done < shards:
        while submitted < shards and len(pending) < window:
            pending.append(task.remote(cfg, output, submitted))
            submitted += 1
        ready, pending = ray.wait(pending, num_returns=1)
        done, written = done + 1, written + ray.get(ready[0])
        if progress:
            progress(done, shards, written)
    return {"format": "voc", "path": images, "annotations": annotations, "records": cfg.num_images}
