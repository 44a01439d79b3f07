"""How well an annotator agrees with an input's own objects (COCO, VOC, a side table), per object
and overall, at the level the VLM study uses them: an image's set of object names.

Per object: precision = TP / (TP + FP) (of the images the annotator says show it, the share the
input agrees on), recall = TP / (TP + FN) (of the images the input says show it, the share the
annotator finds); overall, the counts summed over objects (micro averages) and the plain mean
of the per-object values over the objects the input names at least once (macro recall) or the
annotator reports at least once (macro precision). A ratio with nothing to count is None.
The input's names outside the vocabulary are listed apart (no annotator over the vocabulary can
report them), with how many images name each.
"""
from __future__ import annotations


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def agreement(counts: dict) -> dict:
    """From the annotate stage's counts (``tp``, ``fp``, ``fn``, ``outside``, ``compared``)."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    names = sorted(set(tp) | set(fp) | set(fn))
    per_object = {o: {"tp": tp.get(o, 0), "fp": fp.get(o, 0), "fn": fn.get(o, 0),
                      "precision": _ratio(tp.get(o, 0), tp.get(o, 0) + fp.get(o, 0)),
                      "recall": _ratio(tp.get(o, 0), tp.get(o, 0) + fn.get(o, 0))} for o in names}
    TP, FP, FN = sum(tp.values()), sum(fp.values()), sum(fn.values())
    precisions = [v["precision"] for v in per_object.values() if v["precision"] is not None]
    recalls = [v["recall"] for v in per_object.values() if v["recall"] is not None]
    return {"images": counts["compared"], "tp": TP, "fp": FP, "fn": FN,
            "precision": _ratio(TP, TP + FP), "recall": _ratio(TP, TP + FN),
            "macro_precision": round(sum(precisions) / len(precisions), 6) if precisions else None,
            "macro_recall": round(sum(recalls) / len(recalls), 6) if recalls else None,
            "per_object": per_object, "outside_vocabulary": dict(sorted(counts["outside"].items()))}
