"""Write the synthetic generator's records as a Hugging Face dataset, in one of ``WRITERS``' layouts.

Features (``features``): ``id`` (string), ``image`` (``datasets.Image``: the generator's PNG bytes,
unchanged, so pixels compare exactly; its ``path`` is ``<id>.png`` as the Hub's exports name
embedded images), ``label`` (``ClassLabel`` named ``synthetic.class_name(c)``), ``caption``,
``objects`` (a list of strings), ``boxes`` (a list of [x0, y0, x1, y1] floats in pixels) and
``box_labels`` (a list of ints, parallel to ``boxes``).

- ``disk``: ``Dataset.save_to_disk(output)``;
- ``parquet``: ``Dataset.to_parquet`` into ``output/data/train-00000-of-00001.parquet``, the Hub's
  name for a one-file train split;
- ``imagefolder``: ``output/<class folder>/<id>.png`` (folders sort in label order:
  ``synth_voc.class_folder``) with ``output/metadata.jsonl`` holding every other feature, keyed by
  ``file_name``.

Every record is generated on the driver and the table built in memory: this writer serves tests
and demonstrations at small sizes (thousands of records), not the generator's scale, for which
``synth_write`` writes record shards from Ray tasks.
"""
from __future__ import annotations

import json
import math

from study import storage
from study.config import DataConfig
from study.data import synth_voc, synth_write, synthetic
from study.data.hf import offline_datasets  # sets HF_HUB_OFFLINE, HF_DATASETS_OFFLINE first
from study.errors import StudyError

PARQUET_FILE = ("data", "train-00000-of-00001.parquet")
COLUMNS = ("id", "image", "label", "caption", "objects", "boxes", "box_labels")


def features(num_classes: int):
    """The written dataset's ``datasets.Features``."""
    d = offline_datasets()
    return d.Features({
        "id": d.Value("string"),
        "image": d.Image(),
        "label": d.ClassLabel(names=[synthetic.class_name(c) for c in range(num_classes)]),
        "caption": d.Value("string"),
        "objects": d.Sequence(d.Value("string")),
        "boxes": d.Sequence(d.Sequence(d.Value("float32"), length=4)),
        "box_labels": d.Sequence(d.Value("int32")),
    })


def rows(cfg: DataConfig) -> dict[str, list]:
    """Every record as the dataset's columns (``COLUMNS``), in record order."""
    shards = math.ceil(cfg.num_images / cfg.shard_size)
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for shard in range(shards):
        cols = synth_write.shard_columns(cfg, shard)
        out["id"] += cols["id"]
        out["image"] += [{"bytes": png, "path": f"{rid}.png"} for rid, png in zip(cols["id"], cols["image"])]
        out["label"] += [int(v) for v in cols["label"]]
        out["caption"] += cols["caption"]
        out["objects"] += cols["objects"]
        out["boxes"] += [[[float(b[k]) for k in ("x0", "y0", "x1", "y1")] for b in boxes] for boxes in cols["boxes"]]
        out["box_labels"] += [[int(b["label"]) for b in boxes] for boxes in cols["boxes"]]
    return out


def write_imagefolder(cfg: DataConfig, output: str, cols: dict[str, list]) -> None:
    """Class folders of PNG files and a metadata.jsonl naming each file with its other columns."""
    lines = []
    for i, rid in enumerate(cols["id"]):
        name = f"{synth_voc.class_folder(cols['label'][i], cfg.num_classes)}/{rid}.png"
        storage.write_bytes(storage.join(output, *name.split("/")), cols["image"][i]["bytes"])
        meta = {c: cols[c][i] for c in ("id", "caption", "objects", "boxes", "box_labels")}
        lines.append(json.dumps({"file_name": name, **meta}))
    storage.write_bytes(storage.join(output, "metadata.jsonl"), ("\n".join(lines) + "\n").encode())


def _dataset(cfg: DataConfig, cols: dict[str, list]):
    return offline_datasets().Dataset.from_dict(cols, features=features(cfg.num_classes))


def write_disk(cfg: DataConfig, output: str, cols: dict[str, list]) -> None:
    _dataset(cfg, cols).save_to_disk(output)


def write_parquet(cfg: DataConfig, output: str, cols: dict[str, list]) -> None:
    with storage.open_atomic(storage.join(output, *PARQUET_FILE), "wb") as fh:
        _dataset(cfg, cols).to_parquet(fh)


WRITERS = {"disk": write_disk, "parquet": write_parquet, "imagefolder": write_imagefolder}


def write_hf(cfg: DataConfig, output: str, layout: str = "disk") -> dict:
    """Write ``cfg.num_images`` records under ``output`` as a Hugging Face dataset in ``layout``."""
    if layout not in WRITERS:
        raise StudyError(f"unknown layout '{layout}'; choose from {list(WRITERS)}")
    WRITERS[layout](cfg, output, rows(cfg))
    return {"format": "hf", "layout": layout, "path": output, "records": cfg.num_images, "split": "train"}
