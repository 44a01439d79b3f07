"""What a study would get from an input, as statistics over record batches (pure: no Ray).

``batch_stats`` counts one batch of records (the record schema plus the readers' ``_status``);
``merge`` adds two counts and is associative, so tasks count their batches and the driver adds up
the partial counts in any grouping; ``finish`` turns the total into a summary (means, top
objects, named histogram buckets) and ``render_text`` prints it. Counts are plain JSON data (label
keys are strings), so a partial count travels between processes as a JSON string.

A record whose read status is not ``ok`` counts only in the status counts: the study never sees
it. Every other statistic is over the ``ok`` records.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pyarrow as pa

from study.config import CropConfig
from study.core import quality
from study.core.objects import named_objects
from study.data.records import STATUS
from study.embed.views import crop_for

CAPTION_EDGES = (1, 5, 10, 20, 40)  # caption words: 0, 1-4, 5-9, 10-19, 20-39, 40+
CAPTION_BUCKETS = ("0", "1-4", "5-9", "10-19", "20-39", "40+")
SIDE_EDGES = (32, 64, 128, 256, 512, 1024)  # shorter image side in pixels
SIDE_BUCKETS = ("<32", "32-63", "64-127", "128-255", "256-511", "512-1023", ">=1024")
FIELDS = ("label", "boxes", "caption", "objects")
TOP_OBJECTS = 20
NO_SIZE = "no_size"  # a record without width or height: no crop can be placed
COUNTERS = ("status", "labels", "objects", "missing", "box_problems")
RANGES = ("caption_words", "width", "height")


def _column(batch: pa.Table, name: str) -> list:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * batch.num_rows


def _range(values: list[int]) -> dict:
    return {"count": len(values), "sum": int(sum(values)), "min": min(values, default=None),
            "max": max(values, default=None)}


def _histogram(values: list[int], edges: tuple[int, ...]) -> list[int]:
    index = np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.int64), side="right")
    return np.bincount(index, minlength=len(edges) + 1).tolist()


def _missing(field: str, value) -> bool:
    return not quality.has_text(value) if field == "caption" else value is None


def _boxes(item) -> list[tuple]:
    return [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in (item or [])]


def crop_counts(rows: dict[str, list], crop_cfg: CropConfig) -> dict:
    """SSL: records with a crop under ``embed.crop``, and why the others have none."""
    skipped = Counter()
    for w, h, boxes, label in zip(rows["width"], rows["height"], rows["boxes"], rows["label"]):
        skipped[NO_SIZE if w is None or h is None else crop_for(w, h, _boxes(boxes), label, crop_cfg)[1]] += 1
    return {"valid": skipped.pop(None, 0), "skipped": dict(skipped)}


def naming_counts(rows: dict[str, list], crop_cfg: CropConfig) -> dict:
    """VLM: captions that name all of their record's objects, and those that leave some unnamed
    (records without caption text or without objects are not checked)."""
    out = {"all_named": 0, "some_unnamed": 0, "not_checked": 0, "objects": 0, "objects_unnamed": 0}
    for caption, objects in zip(rows["caption"], rows["objects"]):
        if not quality.has_text(caption) or not objects:
            out["not_checked"] += 1
            continue
        unnamed = len(objects) - len(named_objects(caption, objects))
        out["some_unnamed" if unnamed else "all_named"] += 1
        out["objects"] += len(objects)
        out["objects_unnamed"] += unnamed
    return out


def batch_stats(batch: pa.Table, crop_cfg: CropConfig, check: tuple[str, Callable[[dict, CropConfig], dict]]) -> dict:
    """``check``: the study kind's own (summary key, counts of the batch's usable records)
    (``StudyKind.inspect_check``)."""
    """Counts of one batch; columns the batch lacks count as null (a missing ``_status`` as ok)."""
    status = [s or quality.OK for s in _column(batch, STATUS)]
    ok = [i for i, s in enumerate(status) if s == quality.OK]
    rows = {}
    for name in ("width", "height", *FIELDS):
        values = _column(batch, name)
        rows[name] = [values[i] for i in ok]
    captions = [len(c.split()) for c in rows["caption"] if c is not None]
    sized = [(w, h) for w, h in zip(rows["width"], rows["height"]) if w is not None and h is not None]
    problems = (quality.box_reason(w, h, _boxes(b)) for w, h, b in zip(rows["width"], rows["height"], rows["boxes"])
                if w is not None and h is not None)
    key, check = check
    words = _range(captions)
    words["buckets"] = _histogram(captions, CAPTION_EDGES)
    return {
        "records": batch.num_rows,
        "status": dict(Counter(status)),
        "labels": dict(Counter(str(v) for v in rows["label"] if v is not None)),
        "objects": dict(Counter(o for objs in rows["objects"] for o in (objs or []))),
        "caption_words": words,
        "width": _range([w for w, _ in sized]),
        "height": _range([h for _, h in sized]),
        "short_side": _histogram([min(s) for s in sized], SIDE_EDGES),
        "missing": {f: sum(1 for v in rows[f] if _missing(f, v)) for f in FIELDS},
        "box_problems": dict(Counter(r for r in problems if r is not None)),
        key: check(rows, crop_cfg),
    }


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def _merge_range(a: dict, b: dict) -> dict:
    out = {k: a[k] + b[k] for k in ("count", "sum")}
    for k, pick in (("min", min), ("max", max)):
        present = [v[k] for v in (a, b) if v[k] is not None]
        out[k] = pick(present) if present else None
    if "buckets" in a:
        out["buckets"] = [x + y for x, y in zip(a["buckets"], b["buckets"])]
    return out


def merge(a: dict, b: dict) -> dict:
    """The counts of two batches together (associative and commutative)."""
    out = {"records": a["records"] + b["records"],
           "short_side": [x + y for x, y in zip(a["short_side"], b["short_side"])]}
    out.update({k: _add(a[k], b[k]) for k in COUNTERS})
    out.update({k: _merge_range(a[k], b[k]) for k in RANGES})
    if "crop" in a:
        out["crop"] = {"valid": a["crop"]["valid"] + b["crop"]["valid"],
                       "skipped": _add(a["crop"]["skipped"], b["crop"]["skipped"])}
    if "naming" in a:
        out["naming"] = _add(a["naming"], b["naming"])
    return out


def _by_count(counts: dict) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _mean(r: dict) -> float | None:
    return r["sum"] / r["count"] if r["count"] else None


def finish(stats: dict) -> dict:
    """The summary printed and shown: sorted histograms, means, the top objects."""
    words = stats["caption_words"]
    out = {
        "records_read": stats["records"],
        "status": _by_count(stats["status"]),
        "labels": sorted(((int(k), v) for k, v in stats["labels"].items())),
        "objects": {"distinct": len(stats["objects"]), "top": _by_count(stats["objects"])[:TOP_OBJECTS]},
        "caption_words": {"count": words["count"], "mean": _mean(words), "min": words["min"], "max": words["max"],
                          "histogram": list(zip(CAPTION_BUCKETS, words["buckets"]))},
        "image_size": {"count": stats["width"]["count"],
                       **{k: {"min": stats[k]["min"], "mean": _mean(stats[k]), "max": stats[k]["max"]}
                          for k in ("width", "height")},
                       "short_side": list(zip(SIDE_BUCKETS, stats["short_side"]))},
        "missing": list(stats["missing"].items()),
        "box_problems": _by_count(stats["box_problems"]),
    }
    if "crop" in stats:
        out["crop"] = {"valid": stats["crop"]["valid"], "skipped": _by_count(stats["crop"]["skipped"])}
    if "naming" in stats:
        out["naming"] = stats["naming"]
    return out


def _num(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def sections(summary: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    """(title, [(name, value)]) per statistic: the text and the page show the same rows."""
    words, size = summary["caption_words"], summary["image_size"]
    out = [
        ("records", [("read", summary["records_read"]), *summary["status"]]),
        (f"labels ({len(summary['labels'])} distinct)", summary["labels"]),
        (f"objects ({summary['objects']['distinct']} distinct, top {TOP_OBJECTS})", summary["objects"]["top"]),
        (f"caption words ({words['count']} captions)",
         [("mean", _num(words["mean"])), ("min", _num(words["min"])), ("max", _num(words["max"])),
          *words["histogram"]]),
        (f"image size ({size['count']} images)",
         [(f"{k} min / mean / max", " / ".join(str(_num(size[k][s])) for s in ("min", "mean", "max")))
          for k in ("width", "height")] + [(f"shorter side {b}", n) for b, n in size["short_side"]]),
        ("missing fields (null; caption: null or blank)", summary["missing"]),
        ("box problems", summary["box_problems"]),
    ]
    if "crop" in summary:
        out.append(("SSL crop (embed.crop)", [("valid", summary["crop"]["valid"]),
                                             *((f"skipped: {r}", n) for r, n in summary["crop"]["skipped"])]))
    if "naming" in summary:
        n = summary["naming"]
        out.append(("VLM captions naming the record's objects",
                    [("all objects named", n["all_named"]), ("some objects unnamed", n["some_unnamed"]),
                     ("not checked (no caption or objects)", n["not_checked"]),
                     ("objects unnamed / objects", f"{n['objects_unnamed']} / {n['objects']}")]))
    if "annotation" in summary:  # a preview of an annotator on the sampled records
        a = summary["annotation"]
        out.append((f"annotator on {a['images']} sampled records",
                     [(k.replace("_", " "), a[k]) for k in ("annotator", "vocabulary", "thresholds", "with_objects",
                                                            "objects_per_image")]
                     + [(f"object: {name}", n) for name, n in a["most_frequent"]]))
    return [(title, rows or [("none", "")]) for title, rows in out]


def render_text(summary: dict) -> str:
    """One section per statistic: a title line, then aligned ``name  value`` lines."""
    lines = []
    for title, rows in sections(summary):
        lines.append(title)
        width = max(len(str(k)) for k, _ in rows)
        lines.extend(f"  {str(k):<{width}}  {str(v):>8}".rstrip() for k, v in rows)
    return "\n".join(lines) + "\n"
