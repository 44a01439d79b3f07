"""Crop geometry for the SSL test (docs/concepts/ssl-dejavu.md): which part of an image the attack sees.

Boxes and rectangles are (x0, y0, x1, y1) in pixels, half-open: a box covers columns x0..x1-1.
Two rectangles that only touch along an edge do not intersect. Box edges are rounded outwards to
whole pixels, so a crop never shows any pixel of an object.

Crop rules live in ``CROP_RULES``; each returns ``(rect, None)`` or ``(None, reason)``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from study.core.quality import box_reason

Rect = tuple[int, int, int, int]

REASON_NO_BOXES = "no_boxes"
REASON_COVERED = "fully_covered"
REASON_TOO_SMALL = "crop_too_small"


def pixel_boxes(width: int, height: int, boxes: Sequence[Sequence[float]]) -> list[Rect]:
    """Round boxes outwards to whole pixels and clip them to the image; drop empty ones (callers
    first reject records with unusable boxes, ``core.quality.box_reason``: dropping one here
    would let a crop show its object)."""
    out = []
    for x0, y0, x1, y1 in boxes:
        r = (
            max(0, math.floor(x0)),
            max(0, math.floor(y0)),
            min(width, math.ceil(x1)),
            min(height, math.ceil(y1)),
        )
        if r[2] > r[0] and r[3] > r[1]:
            out.append(r)
    return out


def largest_free_rect(width: int, height: int, boxes: Sequence[Sequence[float]]) -> Rect | None:
    """Largest-area axis-aligned rectangle inside the image that intersects no box.

    Coordinates are compressed to the image and box edges (an optimal rectangle's sides lie on
    them), then the classic maximal-rectangle-in-histogram scan runs over the compressed grid with
    cell widths and heights as weights: O(n^2) for n boxes. Ties keep the first rectangle found
    scanning rows top to bottom, columns left to right. None when the boxes cover everything.
    """
    pboxes = pixel_boxes(width, height, boxes)
    xs = sorted({0, width, *[b[0] for b in pboxes], *[b[2] for b in pboxes]})
    ys = sorted({0, height, *[b[1] for b in pboxes], *[b[3] for b in pboxes]})
    dx = np.diff(xs)
    dy = np.diff(ys)
    # blocked[j, i]: compressed cell (column i, row j) lies inside some box.
    blocked = np.zeros((len(dy), len(dx)), dtype=bool)
    for x0, y0, x1, y1 in pboxes:
        i0, i1 = xs.index(x0), xs.index(x1)
        j0, j1 = ys.index(y0), ys.index(y1)
        blocked[j0:j1, i0:i1] = True
    heights = np.zeros(len(dx), dtype=np.int64)  # free pixels above and including this row, per column
    best_area, best = 0, None
    for j in range(len(dy)):
        heights = np.where(blocked[j], 0, heights + dy[j])
        area, rect = _max_rect_in_histogram(heights, dx, xs, ys[j + 1])
        if area > best_area:
            best_area, best = area, rect
    return best


def _max_rect_in_histogram(heights: np.ndarray, widths: np.ndarray, xs: list[int], bottom: int):
    """Largest rectangle under a histogram whose bars have the given widths.

    Returns (area, (x0, y0, x1, y1)) with the rectangle resting on y = ``bottom``.
    """
    best_area, best = 0, None
    stack: list[tuple[int, int]] = []  # (start bar index, height), heights strictly increasing
    for i in range(len(heights) + 1):
        h = int(heights[i]) if i < len(heights) else 0
        start = i
        while stack and stack[-1][1] >= h:
            s, sh = stack.pop()
            area = sh * (xs[i] - xs[s])
            if area > best_area:
                best_area, best = area, (xs[s], bottom - sh, xs[i], bottom)
            start = s
        if h > 0:
            stack.append((start, h))
    return best_area, best


def background_crop(width: int, height: int, boxes: Sequence[Sequence[float]], min_side: int):
    """The background rule: the largest box-free rectangle, kept only if its shorter side >= min_side."""
    if len(boxes) == 0:
        return None, REASON_NO_BOXES
    bad = box_reason(width, height, boxes)
    if bad is not None:  # an inverted, empty, outside or normalised box: no crop could be trusted
        return None, bad
    rect = largest_free_rect(width, height, boxes)
    if rect is None:
        return None, REASON_COVERED
    if min(rect[2] - rect[0], rect[3] - rect[1]) < min_side:
        return None, REASON_TOO_SMALL
    return rect, None


def corner_crop(width: int, height: int, fraction: float) -> Rect:
    """Control crop: the top-left square of side fraction * min(width, height), boxes ignored."""
    side = max(1, int(round(fraction * min(width, height))))
    return (0, 0, side, side)


def _merged(intervals: list[list[int]]) -> list[list[int]]:
    """Sorted intervals with those that overlap or touch merged (the reference code's stack merge)."""
    stack = []
    for lo, hi in sorted(intervals):
        if stack and stack[-1][0] <= lo <= stack[-1][1]:
            stack[-1][1] = max(stack[-1][1], hi)
        else:
            stack.append([lo, hi])
    return stack


def strip_crop(width: int, height: int, boxes: Sequence[Sequence[float]], min_side: int):
    """The published rule (the SSL déjà vu paper's reference code): box edges are cut to whole
    pixels by truncation; the x-axis is split at every box edge (and the image's sides) into
    strips; in each strip, the gaps between the merged y-extents of the boxes crossing it are
    candidates; the candidate with the largest shorter side wins (of equal ones, the last in strip
    order, then top to bottom), kept only if that side is larger than ``min_side`` (the paper: 100
    px at ImageNet's scale). Unlike ``background``, a truncated edge may leave one pixel of an
    object in the crop, as the reference's does."""
    if len(boxes) == 0:
        return None, REASON_NO_BOXES
    bad = box_reason(width, height, boxes)
    if bad is not None:
        return None, bad
    cut = [tuple(int(v) for v in b) for b in boxes]
    xs = sorted(v for x0, _, x1, _ in cut for v in (x0, x1))
    xs = ([0] if xs[0] > 0 else []) + xs + ([width] if xs[-1] < width else [])
    best, best_side = None, -1
    for a, b in zip(xs[:-1], xs[1:]):
        crossing = [[y0, y1] for x0, y0, x1, y1 in cut if min(x1, b) - max(x0, a) > 0]
        gaps = [[0, 0], *_merged(crossing), [height, height]]
        for (_, top), (bottom, _) in zip(gaps[:-1], gaps[1:]):
            if bottom > top and b > a and min(bottom - top, b - a) >= best_side:
                best, best_side = (a, top, b, bottom), min(bottom - top, b - a)
    if best is None:
        return None, REASON_COVERED
    if best_side <= min_side:
        return None, REASON_TOO_SMALL
    return best, None


def lower_left_crop(width: int, height: int, fraction: float) -> Rect:
    """The published control crop: the lower-left corner, ``fraction`` of each side (truncated)."""
    w, h = max(1, int(fraction * width)), max(1, int(fraction * height))
    return (0, height - h, w, height)


def _strips_rule(width, height, boxes, crop_cfg):
    return strip_crop(width, height, boxes, crop_cfg.min_side)


def _lower_left_rule(width, height, boxes, crop_cfg):
    return lower_left_crop(width, height, crop_cfg.corner_fraction), None


def _background_rule(width, height, boxes, crop_cfg):
    return background_crop(width, height, boxes, crop_cfg.min_side)


def _corner_rule(width, height, boxes, crop_cfg):
    return corner_crop(width, height, crop_cfg.corner_fraction), None


CROP_RULES: dict[str, Callable] = {"background": _background_rule, "corner": _corner_rule, "strips": _strips_rule,
                                   "lower_left": _lower_left_rule}
