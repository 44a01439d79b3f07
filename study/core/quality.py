"""Which records a study can use, and why the others are quarantined (pure).

Every record read is either used or quarantined with one reason, never dropped silently. Two
kinds of reason:

- read reasons, decided where the input is read (the data stage): the bytes or the file;
- record reasons, decided from a record's metadata and the split it falls into: a field the
  split needs is missing (SSL attacked sets need a label and boxes, the VLM ones a caption and an
  object set, ...), or a value present is unusable (a box that is inverted, empty, outside the image
  or in normalised [0, 1] coordinates; a negative label).

A box that only sticks out of the image is clipped to it (``core.crops.pixel_boxes``): that is
sound, the object's pixels inside the image stay covered. A box that cannot be clipped to a
non-empty rectangle is not: cropping around "no box" would show the object, so the record goes.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

# -- read reasons (the data stage) ----------------------------------------------------------------
OK = "ok"
UNDECODABLE = "undecodable"  # image bytes that do not decode (corrupt, truncated, not an image)
UNREADABLE = "unreadable"  # an image file or archive member that cannot be read at all
NOT_DOWNLOADED = "not_downloaded"  # img2dataset kept the row of a failed download
MISSING_IMAGE = "missing_image"  # an annotation names an image file that is not there
BAD_ANNOTATION = "bad_annotation"  # the record's own annotation file (a VOC XML, ...) does not parse
DUPLICATE_ID = "duplicate_id"  # every record whose id occurs more than once (which one is right is unknowable)
READ_REASONS = (UNDECODABLE, UNREADABLE, NOT_DOWNLOADED, MISSING_IMAGE, BAD_ANNOTATION, DUPLICATE_ID)

# -- record reasons (the split plan) ---------------------------------------------------------------
MISSING = {"label": "missing_label", "boxes": "missing_boxes", "caption": "missing_caption",
           "objects": "missing_objects"}
BAD_LABEL = "bad_label"
BOX_INVERTED = "box_inverted"
BOX_ZERO_AREA = "box_zero_area"
BOX_OUTSIDE = "box_outside_image"
BOX_NORMALISED = "box_normalised"
BOX_NOT_FINITE = "box_not_finite"
NEAR_DUPLICATE = "near_duplicate"  # an attacked record with a near-duplicate image in another split
RECORD_REASONS = (*MISSING.values(), NEAR_DUPLICATE, BAD_LABEL, BOX_NOT_FINITE, BOX_INVERTED, BOX_ZERO_AREA, BOX_OUTSIDE,
                  BOX_NORMALISED)
REASONS = READ_REASONS + RECORD_REASONS

NORMALISED_MIN_SIDE = 4  # an image at least this large whose boxes all lie in [0, 1]^2 has normalised boxes


def box_reason(width: int, height: int, boxes: Sequence[Sequence[float]]) -> str | None:
    """Why a record's boxes (x0, y0, x1, y1 in pixels) are unusable, or None when every box is."""
    if not boxes:
        return None
    if any(not all(math.isfinite(v) for v in b) for b in boxes):
        return BOX_NOT_FINITE
    if any(x1 < x0 or y1 < y0 for x0, y0, x1, y1 in boxes):
        return BOX_INVERTED
    if min(width, height) >= NORMALISED_MIN_SIDE and all(0.0 <= v <= 1.0 for b in boxes for v in b):
        return BOX_NORMALISED
    if any(x1 == x0 or y1 == y0 for x0, y0, x1, y1 in boxes):
        return BOX_ZERO_AREA
    for x0, y0, x1, y1 in boxes:  # clipped to the image, a box must keep some area
        if min(x1, width) <= max(x0, 0) or min(y1, height) <= max(y0, 0):
            return BOX_OUTSIDE
    return None


def has_text(caption) -> bool:
    """Whether a caption says anything: null and whitespace-only captions do not."""
    return caption is not None and bool(str(caption).strip())


def _present(field: str, value) -> bool:
    if field == "caption":
        return has_text(value)
    return value is not None


def record_reasons(columns: Mapping[str, list], split_of: np.ndarray,
                   needs: Mapping[str, Sequence[str]]) -> list[str | None]:
    """Per record, the reason it cannot be used in the split it falls into, else None.

    ``columns``: the batch's metadata as lists (``width``, ``height`` and whichever of ``label``,
    ``boxes``, ``caption``, ``objects`` the records have; boxes as lists of (x0, y0, x1, y1) or of
    dicts with those keys); ``needs``: split -> fields a record of that split must have. Splits
    not in ``needs`` need nothing. Present values are checked in every split: a record whose boxes
    or label are unusable is quarantined wherever it falls."""
    n = len(split_of)
    out: list[str | None] = [None] * n
    for i in range(n):
        wanted = needs.get(split_of[i], ())
        reason = next((MISSING[f] for f in wanted if f not in columns or not _present(f, columns[f][i])), None)
        if reason is None and "label" in columns and columns["label"][i] is not None and columns["label"][i] < 0:
            reason = BAD_LABEL
        if reason is None and columns.get("boxes") is not None and columns["boxes"][i]:
            boxes = [(b["x0"], b["y0"], b["x1"], b["y1"]) if isinstance(b, dict) else tuple(b)
                     for b in columns["boxes"][i]]
            reason = box_reason(columns["width"][i], columns["height"][i], boxes)
        out[i] = reason
    return out
