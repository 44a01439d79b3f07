"""From a detector's raw proposals to an image's objects, as the published VLM study kept them.

An annotator gives, per image, proposals: boxes (x0, y0, x1, y1) in the stored image's pixels and
a score per query (an open-vocabulary detector's text queries, a closed-set detector's
categories), each query naming a canonical object (``vocabulary``). Kept are:

1. one class per proposal: its best-scoring query (ties: the first query), so a proposal never
   counts as two objects;
2. proposals whose score is at least ``score`` (0.5, the published study's threshold);
3. per object, non-maximum suppression at IoU ``nms_iou`` (torchvision's ``batched_nms``: a box
   overlapping a better-scoring box of the same object by more is dropped; boxes of different
   objects never suppress each other);
4. the ``max_per_image`` best-scoring ones.

The kept boxes become the record's ground truth in the objects side table's columns (``side_row``):
``objects`` (the distinct canonical names, sorted), ``boxes`` (the record schema's box type, the
label being the object's index in the vocabulary), ``scores`` and ``label`` (the COCO reader's
rules: the largest box's object, or the most frequent).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.data.coco import LABEL_RULES


@dataclass(frozen=True)
class Thresholds:
    score: float = 0.5
    nms_iou: float = 0.5
    max_per_image: int = 100


@dataclass(frozen=True)
class Detections:
    """One image's kept detections: boxes (n, 4) float32 pixels (None: image-level tags, which
    have none), scores (n,), objects (n,) int (canonical indices), best first."""

    boxes: np.ndarray | None
    scores: np.ndarray
    objects: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def one_class_per_proposal(scores: np.ndarray, query_object: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score (P,), canonical object (P,)) of each proposal's best query; scores (P, Q), the
    queries' objects (Q,)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[0] == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    best = scores.argmax(axis=1)  # the first of equal maxima
    return scores[np.arange(len(scores)), best], np.asarray(query_object, dtype=np.int64)[best]


def keep(boxes: np.ndarray, scores: np.ndarray, objects: np.ndarray, th: Thresholds) -> Detections:
    """The proposals (boxes (P, 4), one score and object each) kept by the score threshold,
    per-object NMS and the per-image cap, best first (ties: the earlier proposal)."""
    import torch
    from torchvision.ops import batched_nms

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores, objects = np.asarray(scores, dtype=np.float32), np.asarray(objects, dtype=np.int64)
    at = np.flatnonzero(scores >= th.score)
    if len(at):
        # batched_nms returns kept indices by decreasing score; a stable pre-sort makes ties go
        # to the earlier proposal.
        at = at[np.argsort(-scores[at], kind="stable")]
        kept = batched_nms(torch.from_numpy(boxes[at]), torch.from_numpy(scores[at]),
                           torch.from_numpy(objects[at]), th.nms_iou).numpy()
        at = at[np.sort(kept)][: th.max_per_image]  # sorted positions in the score order: best first
    return Detections(boxes[at], scores[at], objects[at])


def side_row(key: str, det: Detections, names: tuple[str, ...], label_rule: str = "largest") -> dict:
    """The objects side table's row of one image (``data.objects``'s columns, and the scores).
    Tags (no boxes) label the image with the most probable one."""
    boxes = [{"x0": float(b[0]), "y0": float(b[1]), "x1": float(b[2]), "y1": float(b[3]), "label": int(o)}
             for b, o in zip(det.boxes, det.objects)] if det.boxes is not None else []
    tagged = det.boxes is None and label_rule != "none"
    label = (int(det.objects[0]) if len(det) else None) if tagged else LABEL_RULES[label_rule](boxes)
    return {"key": key, "objects": sorted({names[int(o)] for o in det.objects}), "boxes": boxes,
            "scores": [float(s) for s in det.scores], "label": label}
