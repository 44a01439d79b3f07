"""Image folders with Pascal-VOC XML boxes (the ImageNet bounding-box layout), mapped to the record schema.

Layout, on local disk or any fsspec store:

- images: ``<images root>/<class>/<stem>.<ext>`` (ext JPEG, jpg or png, any case); the class
  folders, sorted by name, give the label order (``list_classes``), e.g. ImageNet's wnids;
- boxes: ``<annotations root>/<class>/<stem>.xml``, one VOC annotation per image, optional.

A record's id is its image's file stem: ImageNet stems (``n01440764_10026``) are unique across
classes, and a stem that repeats (the same stem in two folders or with two extensions) is
quarantined as a repeated id by the data stage. Its label is its folder's class index.

Boxes: VOC corners are 1-based inclusive pixel indices, so ``xmin=1, xmax=10`` covers the first ten
pixel columns; the record schema's boxes are half-open in 0-based pixels, hence
``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax``. A box's label is the class index of its
object's ``<name>``, or -1 for a name that is no class folder: it is still an object a crop must
avoid. ``truncated`` and ``difficult`` objects are boxes like any other, for the same reason.
An image without an XML file has null boxes and objects (quality then counts it "missing boxes"
where its split needs them); an XML file without objects gives empty ones.

Nothing lists every file on the driver: the class folders are listed there, then Ray Data tasks
list one class folder each (``class_files``) and read the images and XML files (``voc_batch``).
"""
from __future__ import annotations

import hashlib
import posixpath
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Mapping

import pyarrow as pa

from study import storage
from study.data.record_batch import READ_THREADS, read_each, to_records
from study.data.records import read_image_file
from study.errors import DataError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")  # compared in lower case
CORNERS = ("xmin", "ymin", "xmax", "ymax")
ROWS_PER_BATCH = 256  # ImageNet images average ~110 KB: a batch of encoded images stays ~30 MB


# -- parsing (pure) -------------------------------------------------------------------------------
def _number(parent: ET.Element, tag: str) -> float:
    text = parent.findtext(tag)
    if text is None:
        raise ValueError(f"<{parent.tag}> has no <{tag}>")
    return float(text.strip())  # a ValueError for text that is not a number


def voc_objects(text: bytes | str) -> tuple[list[tuple[str, dict]], tuple[int, int] | None]:
    """A VOC annotation -> ([(object name, half-open corners {x0, y0, x1, y1})], declared (width,
    height) or None when it has no <size>), objects in document order. ValueError when the XML does
    not parse, is no <annotation>, or an object lacks its name or a corner number."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"XML does not parse: {e}") from None
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, not <annotation>")
    size_el = root.find("size")
    size = None
    if size_el is not None:
        size = (int(_number(size_el, "width")), int(_number(size_el, "height")))
    objects = []
    for obj in root.iter("object"):
        name, bndbox = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not name or bndbox is None:
            raise ValueError("an <object> lacks its <name> or <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, c) for c in CORNERS)
        objects.append((name, {"x0": xmin - 1, "y0": ymin - 1, "x1": xmax, "y1": ymax}))
    return objects, size


def parse_voc_xml(text: bytes | str, class_index: Mapping[str, int]) -> tuple[list[dict], tuple[int, int] | None]:
    """A VOC annotation -> (boxes as BOX_TYPE dicts, declared size or None); see ``voc_objects``.
    A box's label is ``class_index[name]``, -1 for a name that is not a class."""
    objects, size = voc_objects(text)
    return [{**corners, "label": class_index.get(name, -1)} for name, corners in objects], size


# -- listing ----------------------------------------------------------------------------------------
def _entries(uri: str) -> list[dict]:
    """The entries of one folder (fsspec ``ls`` details), hidden and underscore names left out."""
    fs, path = storage.fs_and_path(uri)
    found = fs.ls(path, detail=True)
    return [e for e in found if not posixpath.basename(e["name"].rstrip("/")).startswith((".", "_"))]


def list_classes(images_uri: str) -> list[str]:
    """The class folder names under ``images_uri``, sorted: the label order."""
    if not storage.exists(images_uri):
        raise DataError(f"input path does not exist: {images_uri}")
    names = sorted(posixpath.basename(e["name"].rstrip("/")) for e in _entries(images_uri)
                   if e["type"] == "directory")
    if not names:
        raise DataError(f"no class folders under {images_uri}: expected <images root>/<class>/<image>.<jpeg|jpg|png>")
    return names


def label_names(images_uri: str) -> list[str]:
    """The names of labels 0..C-1 (the class folders), as the data stage's summary records them."""
    return list_classes(images_uri)


def _image_files(images_uri: str, wnid: str) -> list[dict]:
    return sorted((e for e in _entries(storage.join(images_uri, wnid))
                   if e["type"] == "file" and e["name"].lower().endswith(IMAGE_SUFFIXES)), key=lambda e: e["name"])


def class_files(row: dict, images_uri: str, class_index: Mapping[str, int]) -> list[dict]:
    """One class folder -> a row per image file: id (the file stem), wnid, label and path (a URI)."""
    wnid = row["wnid"]
    fs, _ = storage.fs_and_path(images_uri)
    out = []
    for e in _image_files(images_uri, wnid):
        name = posixpath.basename(e["name"])
        path = e["name"] if storage.is_local(images_uri) else fs.unstrip_protocol(e["name"])
        out.append({"id": posixpath.splitext(name)[0], "wnid": wnid, "label": class_index[wnid], "path": path})
    return out


def fingerprint(images_uri: str, annotations_uri: str | None) -> list[list]:
    """Per class: [name, images, XML files, digest of their names and sizes]: changes when a file is
    added, removed or resized. One listing per folder, in threads; the driver keeps one row per class."""
    def one(wnid: str) -> list:
        files = [(posixpath.basename(e["name"]), int(e["size"])) for e in _image_files(images_uri, wnid)]
        try:
            found = _entries(storage.join(annotations_uri, wnid)) if annotations_uri else []
        except FileNotFoundError:  # a class without boxes
            found = []
        xml = sorted((posixpath.basename(e["name"]), int(e["size"])) for e in found
                     if e["type"] == "file" and e["name"].endswith(".xml"))
        digest = hashlib.sha256(repr((files, xml)).encode()).hexdigest()[:16]
        return [wnid, len(files), len(xml), digest]

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(one, list_classes(images_uri)))


# -- per-batch mapping (no Ray) -----------------------------------------------------------------------
def _read_image(uri: str) -> tuple[bytes | None, str]:
    return read_image_file(*storage.fs_and_path(uri))


def _annotation(fs, path: str | None, class_index: Mapping[str, int]) -> tuple[list | None, list | None, bool]:
    """(boxes, object names, parsed) of one XML file; no file gives (None, None, True)."""
    if path is None:
        return None, None, True
    try:
        text = fs.cat_file(path)
    except FileNotFoundError:
        return None, None, True
    except Exception:  # a file that is there but cannot be read is as unusable as one that does not parse
        return None, None, False
    try:
        objects, _ = voc_objects(text)
    except ValueError:
        return None, None, False
    boxes = [{**corners, "label": class_index.get(name, -1)} for name, corners in objects]
    return boxes, sorted({name for name, _ in objects}), True


def voc_batch(batch: pa.Table, annotations_uri: str | None, class_index: Mapping[str, int]) -> pa.Table:
    """Rows of ``class_files`` -> the record schema's columns plus the read status. Width and height
    come from the image (its boxes are in its pixel frame, whatever the XML declares); an image that
    cannot be used takes precedence over its XML in the status."""
    rows = batch.select(["id", "wnid", "path"]).to_pylist()
    xml_fs, xml_root = storage.fs_and_path(annotations_uri) if annotations_uri else (None, None)

    def one(r: dict):
        data, status = _read_image(r["path"])
        xml = posixpath.join(xml_root, r["wnid"], r["id"] + ".xml") if xml_root is not None else None
        return data, status, _annotation(xml_fs, xml, class_index)

    read = read_each(one, rows)
    return to_records({"id": batch.column("id"), "label": batch.column("label"),
                       "boxes": [a[0] for _, _, a in read], "objects": [a[1] for _, _, a in read]},
                      [(data, status) for data, status, _ in read], [a[2] for _, _, a in read])


# -- reader (Ray Data) --------------------------------------------------------------------------------
def read_voc(images_uri: str, annotations_uri: str | None, rows_per_batch: int = ROWS_PER_BATCH):
    """Class folders under ``images_uri`` with their XML under ``annotations_uri`` (None: no boxes)
    -> Dataset of records and read status. Only the class folders are listed here."""
    import ray

    images_uri = storage.absolute(images_uri)
    annotations_uri = storage.absolute(annotations_uri) if annotations_uri else None
    classes = list_classes(images_uri)
    class_index = {w: i for i, w in enumerate(classes)}
    return (ray.data.from_items([{"wnid": w} for w in classes])
            .flat_map(partial(class_files, images_uri=images_uri, class_index=class_index))
            .map_batches(partial(voc_batch, annotations_uri=annotations_uri, class_index=class_index),
                         batch_format="pyarrow", batch_size=rows_per_batch))
