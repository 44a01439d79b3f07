"""COCO-style inputs: an image folder with COCO JSON annotations, mapped to the record schema.

Two annotation files, either of which may be absent (at least one is needed):

- ``instances``: ``images`` ({id, file_name, width, height}), ``annotations`` ({image_id,
  category_id, bbox [x, y, w, h] in pixels}) and ``categories`` ({id, name}): boxes, objects, label;
- ``captions``: ``images`` and ``annotations`` ({id, image_id, caption}): the caption.

Category ids may be any integers; a box's label is the id's position among the sorted ids
(0..C-1), and the names in that order ride on the parsed table (``category_names``). An image
listed in the instances file with no annotations is annotated as empty (no boxes, no objects); an
image only the captions file lists has null boxes, objects and label. Box geometry is passed
through as given: ``core.quality`` decides which boxes are usable.

``parse_coco`` is pure; ``read_coco`` maps the parsed rows over Ray Data with ``coco_batch``,
which reads each image file once and keeps the record with a null image and a read status when
the file is missing, unreadable or not an image.
"""
from __future__ import annotations

import json
import posixpath
from collections import Counter, defaultdict
from functools import partial

import pyarrow as pa

from study import storage
from study.data.record_batch import read_each, to_records
from study.data.records import BOX_TYPE, read_image_file
from study.errors import DataError

ROW_SCHEMA = pa.schema([("id", pa.string()), ("file_name", pa.string()), ("width", pa.int32()),
                        ("height", pa.int32()), ("boxes", pa.list_(BOX_TYPE)), ("objects", pa.list_(pa.string())),
                        ("label", pa.int32()), ("caption", pa.string())])
CATEGORIES_KEY = b"coco_categories"  # schema metadata: category names in label-index order (JSON)
ROWS_PER_BLOCK = 1000
NAMED_FAILURES = 3


def load_json(uri: str) -> dict:
    """A JSON file from any fsspec URI; a DataError naming it when it cannot be read or parsed."""
    try:
        return storage.read_json(uri)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read COCO annotations {uri}: {e}") from None


# -- label rules: an image's boxes (BOX_TYPE dicts) -> its label ----------------------------------
def _largest(boxes: list[dict]) -> int | None:
    area = lambda b: (b["x1"] - b["x0"]) * (b["y1"] - b["y0"])  # noqa: E731
    return min(boxes, key=lambda b: (-area(b), b["label"]))["label"] if boxes else None


def _most_frequent(boxes: list[dict]) -> int | None:
    counts = Counter(b["label"] for b in boxes)
    return min(counts, key=lambda c: (-counts[c], c)) if counts else None


LABEL_RULES = {"largest": _largest, "most_frequent": _most_frequent, "none": lambda boxes: None}

# -- caption modes: (image id, [(annotation id, caption)]) -> [(record id, caption)] --------------
CAPTION_MODES = {
    "first": lambda image_id, caps: [(str(image_id), min(caps)[1])],
    "each": lambda image_id, caps: [(f"{image_id}-{ann_id}", text) for ann_id, text in sorted(caps)],
}


# -- parsing (pure) -------------------------------------------------------------------------------
def _images(doc, name: str) -> list[dict]:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"COCO annotations {name} have no 'images' list")
    for im in doc["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"COCO annotations {name}: an image entry lacks 'id' or 'file_name': {im!r:.200}")
    return doc["images"]


def _annotations(doc: dict, name: str, images: list[dict], field: str, valid) -> dict:
    """Annotations grouped by image id; every one must name a listed image and pass ``valid``."""
    known = {im["id"] for im in images}
    grouped, orphans = defaultdict(list), []
    for ann in doc.get("annotations") or []:
        if not isinstance(ann, dict) or not valid(ann.get(field)):
            raise DataError(f"COCO annotations {name}: bad '{field}' in annotation {ann!r:.200}")
        if ann.get("image_id") in known:
            grouped[ann["image_id"]].append(ann)
        else:
            orphans.append(ann.get("image_id"))
    if orphans:
        raise DataError(f"COCO annotations {name}: {len(orphans)} annotation(s) name no listed image, "
                        f"e.g. image_id {', '.join(map(repr, list(dict.fromkeys(orphans))[:NAMED_FAILURES]))}")
    return grouped


def _is_bbox(v) -> bool:
    numbers = isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return numbers and len(v) == 4


def _categories(doc: dict, name: str) -> tuple[dict, list[str]]:
    """(category id -> label index, names in index order): ids sorted, so any ids become 0..C-1."""
    cats = doc.get("categories") or []
    if not all(isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str) for c in cats):
        raise DataError(f"COCO annotations {name}: every category needs an 'id' and a 'name'")
    ordered = sorted(cats, key=lambda c: c["id"])
    repeated = sorted({a["id"] for a, b in zip(ordered, ordered[1:]) if a["id"] == b["id"]})
    if repeated:
        raise DataError(f"COCO annotations {name}: category id(s) {repeated[:NAMED_FAILURES]} repeat")
    return {c["id"]: i for i, c in enumerate(ordered)}, [c["name"] for c in ordered]


def _boxes(anns: list[dict], index: dict, name: str) -> list[dict]:
    out = []
    for a in anns:
        if a.get("category_id") not in index:
            raise DataError(f"COCO annotations {name}: annotation {a.get('id')!r} has unknown "
                            f"category_id {a.get('category_id')!r}")
        x, y, w, h = a["bbox"]
        out.append({"x0": x, "y0": y, "x1": x + w, "y1": y + h, "label": index[a["category_id"]]})
    return out


def parse_coco(instances: dict | None, captions: dict | None, label_rule: str = "largest",
               caption_mode: str = "first", names: tuple[str, str] = ("instances", "captions")) -> pa.Table:
    """COCO annotation documents -> one row per record (ROW_SCHEMA), images in listed order
    (the instances file's, then images only the captions file lists). ``names`` (the files, for
    error messages) and the category names ride along: see ``category_names``."""
    if instances is None and captions is None:
        raise DataError("COCO input needs an instances or a captions annotation file (or both)")
    if label_rule not in LABEL_RULES or caption_mode not in CAPTION_MODES:
        raise DataError(f"unknown COCO label rule '{label_rule}' or caption mode '{caption_mode}'; "
                        f"choose from {sorted(LABEL_RULES)} and {sorted(CAPTION_MODES)}")
    # A repeated image id stays repeated: quality quarantines every record of a duplicated id.
    listed, boxed, captioned, cat_names = [], {}, {}, []
    if instances is not None:
        listed = _images(instances, names[0])
        index, cat_names = _categories(instances, names[0])
        grouped = _annotations(instances, names[0], listed, "bbox", _is_bbox)
        boxed = {im["id"]: _boxes(grouped.get(im["id"], []), index, names[0]) for im in listed}
    if captions is not None:
        images = _images(captions, names[1])
        grouped = _annotations(captions, names[1], images, "caption", lambda v: isinstance(v, str))
        captioned = {k: [(a.get("id", 0), a["caption"]) for a in v] for k, v in grouped.items()}
        listed = listed + [im for im in images if im["id"] not in boxed]
    rule, mode = LABEL_RULES[label_rule], CAPTION_MODES[caption_mode]
    rows = []
    for im in listed:
        image_id = im["id"]
        boxes = boxed.get(image_id)
        objects = sorted({cat_names[b["label"]] for b in boxes}) if boxes is not None else None
        caps = captioned.get(image_id)
        for rid, caption in mode(image_id, caps) if caps else [(str(image_id), None)]:
            rows.append({"id": rid, "file_name": im["file_name"], "width": im.get("width"),
                         "height": im.get("height"), "boxes": boxes, "objects": objects,
                         "label": rule(boxes) if boxes is not None else None, "caption": caption})
    try:
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # e.g. a width that is not an integer
        given = [n for n, doc in zip(names, (instances, captions)) if doc is not None]
        raise DataError(f"COCO annotations {' / '.join(given)}: {e}") from None
    return table.replace_schema_metadata({CATEGORIES_KEY: json.dumps(cat_names).encode()})


def category_names(rows: pa.Table) -> list[str]:
    """The category names of parsed rows in label-index order (empty without instances)."""
    return json.loads((rows.schema.metadata or {}).get(CATEGORIES_KEY, b"[]"))


def load_coco(instances_uri: str | None, captions_uri: str | None, label_rule: str = "largest",
              caption_mode: str = "first") -> pa.Table:
    """``parse_coco`` of the annotation files at the URIs (either may be None)."""
    docs = [load_json(u) if u else None for u in (instances_uri, captions_uri)]
    return parse_coco(*docs, label_rule, caption_mode, names=(instances_uri or "", captions_uri or ""))


# -- per-batch mapping (no Ray) ---------------------------------------------------------------------
def coco_batch(batch: pa.Table, images_uri: str) -> pa.Table:
    """Parsed rows -> the record schema's columns plus the read status, reading ``images_uri/file_name``.
    Width and height come from the image: its boxes are in its pixel frame, whatever the JSON says."""
    fs, root = storage.fs_and_path(images_uri)
    paths = [posixpath.join(root, f) for f in batch.column("file_name").to_pylist()]
    return to_records({name: batch.column(name) for name in ("id", "label", "boxes", "caption", "objects")},
                      read_each(lambda p: read_image_file(fs, p), paths))


# -- reader (Ray Data) ------------------------------------------------------------------------------
def read_coco(images_uri: str, rows: pa.Table, rows_per_block: int = ROWS_PER_BLOCK):
    """Parsed rows -> Dataset of records and read status, images read from ``images_uri``."""
    import ray

    blocks = [rows.slice(i, rows_per_block) for i in range(0, rows.num_rows, rows_per_block)] or [rows]
    return ray.data.from_arrow(blocks).map_batches(
        partial(coco_batch, images_uri=storage.absolute(images_uri)), batch_format="pyarrow",
        batch_size=rows_per_block)
