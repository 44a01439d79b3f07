"""What the model sees of each record: whole public images, crops of the attacked sets.

``plan_crops`` decides in the driver, from metadata only, which records get a crop and counts
the skipped ones by reason; ``prepare_batch`` applies the same rule to a batch of records inside
the Ray Data pipeline. Both call ``crop_for``, so the plan and the pipeline cannot disagree.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import pyarrow as pa

from study.config import CropConfig
from study.core.crops import CROP_RULES
from study.core.split_plan import SplitPlan
from study.data import records
from study.data.model_input import ModelInput, channels_first


REASON_NO_LABEL = "no_label"
WHOLE, CROP = "whole", "crop"


def view_name(space: str) -> str:
    """The embedding view that holds a space's SSLMem alignments (``study.embed.alignment``)."""
    return f"align-{space}"


def crop_for(width: int, height: int, boxes, label, crop_cfg: CropConfig):
    """(rect, None) or (None, reason) for one record under the configured crop rule."""
    if label is None:
        return None, REASON_NO_LABEL
    return CROP_RULES[crop_cfg.rule](width, height, boxes, crop_cfg)


def plan_crops(meta: pa.Table, split_of: np.ndarray, crop_sets: tuple[str, ...], crop_cfg: CropConfig):
    """Rows (id, set, rect or None, reason or None) for records in ``crop_sets``, and skip counts.

    Returns (plan rows, {set: {"embedded": n, "skipped": {reason: n}}}).
    """
    rows, counts = [], {s: Counter() for s in crop_sets}
    labels = meta.column("label").to_pylist()
    widths = meta.column("width").to_pylist()
    heights = meta.column("height").to_pylist()
    for i, (rid, boxes) in enumerate(zip(meta.column("id").to_pylist(), records.iter_boxes(meta.column("boxes")))):
        s = split_of[i]
        if s not in counts:
            continue
        rect, reason = crop_for(widths[i], heights[i], boxes, labels[i], crop_cfg)
        rows.append({"id": rid, "set": s, "rect": rect, "reason": reason})
        counts[s][reason or "embedded"] += 1
    summary = {
        s: {"embedded": c.pop("embedded", 0), "skipped": dict(sorted(c.items()))} for s, c in counts.items()
    }
    return rows, summary


def cropped(data: bytes, width: int, height: int, boxes, label, crop_cfg: CropConfig,
            inputs: ModelInput) -> np.ndarray | None:
    """The model input of the record's crop under the configured rule, or None when the rule
    skips it."""
    rect, _ = crop_for(width, height, boxes, label, crop_cfg)
    return None if rect is None else inputs.of_bytes(data, rect)


def labelled_crops(table: pa.Table, crop_cfg: CropConfig, inputs: ModelInput) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, crops (n, 3, S, S) uint8, labels (n,)) of the records (id, image, width, height, label,
    boxes) that have a label and a crop: the one-model test's crop classifier's inputs."""
    ids, pixels, labels = [], [], []
    for row, boxes in zip(table.select(["id", "image", "width", "height", "label"]).to_pylist(),
                          records.iter_boxes(table.column("boxes"))):
        if row["label"] is None or row["label"] < 0:
            continue
        image = cropped(row["image"], row["width"], row["height"], boxes, row["label"], crop_cfg, inputs)
        if image is not None:
            ids.append(row["id"])
            pixels.append(image)
            labels.append(row["label"])
    return ids, channels_first(inputs.stack(pixels)), np.asarray(labels, np.int64)


def prepare_batch(
    batch: pa.Table,
    plan: SplitPlan,
    modes: Mapping[str, str],
    crop_cfg: CropConfig,
    inputs: ModelInput,
) -> dict[str, np.ndarray]:
    """Records -> model inputs: {"id", "set", "pixels" (n, S, S, 3) uint8} for wanted sets only."""
    ids = batch.column("id").to_pylist()
    split_of = plan.assign(batch)
    images = batch.column("image").to_pylist()
    widths = batch.column("width").to_pylist()
    heights = batch.column("height").to_pylist()
    labels = batch.column("label").to_pylist()
    out_ids, out_sets, pixels = [], [], []
    for i, boxes in enumerate(records.iter_boxes(batch.column("boxes"))):
        mode = modes.get(split_of[i])
        if mode is None:
            continue
        if mode == CROP:
            image = cropped(images[i], widths[i], heights[i], boxes, labels[i], crop_cfg, inputs)
            if image is None:
                continue
        else:
            image = inputs.of_bytes(images[i])
        out_ids.append(ids[i])
        out_sets.append(split_of[i])
        pixels.append(image)
    return {
        "id": np.asarray(out_ids, dtype=object),
        "set": np.asarray(out_sets, dtype=object),
        "pixels": inputs.stack(pixels),
    }
