"""Crop geometry (docs/concepts/ssl-dejavu.md): hand-checked rectangles and a brute-force oracle on random scenes."""
from __future__ import annotations

import numpy as np
import pytest

from study.config import CropConfig
from study.core.crops import (
    CROP_RULES,
    REASON_COVERED,
    REASON_NO_BOXES,
    REASON_TOO_SMALL,
    background_crop,
    corner_crop,
    largest_free_rect,
    lower_left_crop,
    pixel_boxes,
    strip_crop,
)


def area(r):
    return (r[2] - r[0]) * (r[3] - r[1])


def intersects(a, b):
    """Half-open rectangles intersect iff they overlap on both axes by a positive length."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


# ---- pixel_boxes -------------------------------------------------------------------------------


def test_pixel_boxes_round_outwards_and_clip():
    assert pixel_boxes(10, 10, [(2.5, 3.2, 4.1, 5.0)]) == [(2, 3, 5, 5)]
    assert pixel_boxes(10, 8, [(-3.0, -0.5, 12.2, 9.0)]) == [(0, 0, 10, 8)]


def test_pixel_boxes_drop_empty_and_outside_boxes():
    boxes = [(3, 3, 3, 7), (4, 4, 6, 4), (12, 0, 15, 5), (1, 1, 2, 2)]
    assert pixel_boxes(10, 10, boxes) == [(1, 1, 2, 2)]


# ---- largest_free_rect: hand-checked -----------------------------------------------------------


def test_no_boxes_gives_whole_image():
    assert largest_free_rect(7, 5, []) == (0, 0, 7, 5)


def test_one_box_in_the_middle():
    # 10x10 with a box on columns 4..5, rows 3..6: the free bands are 4 wide (left, columns 0..3)
    # and 4 wide (right, columns 6..9), each 10 tall = 40; top band 10x3 = 30; bottom 10x3 = 30.
    rect = largest_free_rect(10, 10, [(4, 3, 6, 7)])
    assert area(rect) == 40
    assert rect in [(0, 0, 4, 10), (6, 0, 10, 10)]


def test_box_touching_a_corner():
    # Box in the top-left corner 3x2 of an 8x6 image: best is right band 5x6 = 30 vs bottom 8x4 = 32.
    assert largest_free_rect(8, 6, [(0, 0, 3, 2)]) == (0, 2, 8, 6)


def test_box_touching_an_edge():
    # A full-height bar on the left edge, columns 0..2, of a 9x4 image leaves columns 3..8.
    assert largest_free_rect(9, 4, [(0, 0, 3, 4)]) == (3, 0, 9, 4)


def test_overlapping_boxes():
    # Two overlapping boxes forming an L-ish blob in 10x10: rows 0..4, columns 0..5 and rows 3..7,
    # columns 2..3. Free candidates: right band columns 6..9 full height 4x10 = 40; bottom band
    # rows 8..9 full width 10x2 = 20; bottom-left rows 5..9 columns 0..1 = 2x5; columns 4..9 rows
    # 5..9 = 6x5 = 30.
    rect = largest_free_rect(10, 10, [(0, 0, 6, 5), (2, 3, 4, 8)])
    assert rect == (6, 0, 10, 10)


def test_boxes_covering_everything_give_none():
    assert largest_free_rect(6, 4, [(0, 0, 3, 4), (3, 0, 6, 4)]) is None
    assert largest_free_rect(6, 4, [(-1, -1, 7, 5)]) is None


def test_touching_a_box_edge_is_allowed():
    # Half-open: box covers columns 0..4; the free rectangle may start at x = 5 (the box's x1).
    rect = largest_free_rect(10, 3, [(0, 0, 5, 3)])
    assert rect == (5, 0, 10, 3)
    assert not intersects(rect, (0, 0, 5, 3))


def test_fractional_box_rounded_outwards():
    # Box x in [4.2, 5.7] covers pixel columns 4 and 5, so the right free band starts at 6, the
    # left one ends at 4: a 6x10 image gives 4x10 on the left.
    assert largest_free_rect(6, 10, [(4.2, 0, 5.7, 10)]) == (0, 0, 4, 10)
    # Box y in [0, 0.1] still blocks the whole first row.
    assert largest_free_rect(5, 5, [(0, 0, 5, 0.1)]) == (0, 1, 5, 5)


# ---- background_crop / corner_crop / CROP_RULES ---------------------------------------------------


def test_background_crop_reasons():
    assert background_crop(10, 10, [], min_side=1) == (None, REASON_NO_BOXES)
    assert background_crop(10, 10, [(0, 0, 10, 10)], min_side=1) == (None, REASON_COVERED)
    # Box leaves a 10x3 band at the bottom: shorter side 3 < 4.
    assert background_crop(10, 10, [(0, 0, 10, 7)], min_side=4) == (None, REASON_TOO_SMALL)
    assert background_crop(10, 10, [(0, 0, 10, 7)], min_side=3) == ((0, 7, 10, 10), None)


def test_too_small_is_judged_on_the_shorter_side():
    # Largest free rect is 2x20 (area 40); min_side 3 rejects it even though its area is large.
    assert background_crop(20, 20, [(0, 0, 20, 18)], min_side=3) == (None, REASON_TOO_SMALL)


def test_corner_crop():
    assert corner_crop(20, 10, 0.4) == (0, 0, 4, 4)
    assert corner_crop(20, 10, 1.0) == (0, 0, 10, 10)
    assert corner_crop(3, 3, 0.01) == (0, 0, 1, 1)


def test_crop_rules_registry():
    cfg = CropConfig(rule="background", min_side=2, corner_fraction=0.5)
    boxes = [(0, 0, 10, 6)]
    assert CROP_RULES["background"](10, 10, boxes, cfg) == ((0, 6, 10, 10), None)
    assert CROP_RULES["corner"](10, 10, boxes, cfg) == ((0, 0, 5, 5), None)


# ---- the published rules (the SSL deja vu paper's reference code), worked by hand ----------------
# Its crop: split x at every (truncated) box edge and the image's sides; in each strip, the gaps
# between the merged y-extents of the boxes crossing it are candidates; the largest shorter side
# wins (the last of equals), kept only if that side is larger than the threshold.


def test_the_strip_rule_on_one_box():
    # 10 x 8, a box (2, 2, 5, 6): strips [0,2) -> (0,0,2,8) side 2; [2,5) -> (2,0,5,2) and
    # (2,6,5,8), sides 2; [5,10) -> (5,0,10,8), side min(5, 8) = 5: the winner.
    assert strip_crop(10, 8, [(2, 2, 5, 6)], 4) == ((5, 0, 10, 8), None)
    assert strip_crop(10, 8, [(2, 2, 5, 6)], 5) == (None, REASON_TOO_SMALL)  # the side must be larger


def test_the_strip_rule_truncates_merges_touching_extents_and_takes_the_last_of_equals():
    # 12 x 10; boxes (3.7, 0, 6.2, 4.9) and (5, 4, 9, 10) truncate to (3,0,6,4) and (5,4,9,10).
    # x splits 0,3,5,6,9,12. [0,3): nothing crosses -> (0,0,3,10) side 3. [3,5): the first box
    # ([0,4]) -> (3,4,5,10) side 2. [5,6): both, [0,4] and [4,10] touch and merge to [0,10] -> no
    # gap. [6,9): the second ([4,10]) -> (6,0,9,4) side 3. [9,12) -> (9,0,12,10) side 3.
    # Three candidates of side 3: the last one wins.
    boxes = [(3.7, 0, 6.2, 4.9), (5, 4, 9, 10)]
    assert strip_crop(12, 10, boxes, 2) == ((9, 0, 12, 10), None)
    assert strip_crop(12, 10, boxes, 3) == (None, REASON_TOO_SMALL)
    assert strip_crop(12, 10, [(0, 0, 12, 10)], 0) == (None, REASON_COVERED)
    assert strip_crop(12, 10, [], 0) == (None, REASON_NO_BOXES)


def test_the_published_corner_crop_is_the_lower_left_fraction_of_each_side():
    # 10 x 8 at 0.3: width int(3.0) = 3, height int(2.4) = 2, from row 8 - 2 = 6 down.
    assert lower_left_crop(10, 8, 0.3) == (0, 6, 3, 8)
    cfg = CropConfig(rule="lower_left", corner_fraction=0.3)
    assert CROP_RULES["lower_left"](10, 8, [(0, 0, 10, 8)], cfg) == ((0, 6, 3, 8), None)  # boxes ignored
    assert CROP_RULES["strips"](10, 8, [(2, 2, 5, 6)], CropConfig(rule="strips", min_side=4)) == ((5, 0, 10, 8), None)


# ---- naive oracle --------------------------------------------------------------------------------


def brute_force_best_area(width, height, pboxes):
    """Max area over every integer rectangle with no occupied pixel (2-D prefix sums)."""
    occ = np.zeros((height, width), dtype=np.int64)
    for x0, y0, x1, y1 in pboxes:
        occ[y0:y1, x0:x1] = 1
    P = np.zeros((height + 1, width + 1), dtype=np.int64)
    P[1:, 1:] = occ.cumsum(0).cumsum(1)
    best = 0
    for y0 in range(height):
        for y1 in range(y0 + 1, height + 1):
            for x0 in range(width):
                x1 = np.arange(x0 + 1, width + 1)
                filled = P[y1, x1] - P[y0, x1] - P[y1, x0] + P[y0, x0]
                free = x1[filled == 0]
                if len(free):
                    best = max(best, (free.max() - x0) * (y1 - y0))
    return best


def random_boxes(rng, width, height, n):
    boxes = []
    for _ in range(n):
        x0, x1 = sorted(rng.uniform(-1, width + 1, size=2))
        y0, y1 = sorted(rng.uniform(-1, height + 1, size=2))
        if rng.random() < 0.5:  # some integer boxes, so edges coincide exactly
            x0, y0, x1, y1 = (float(round(v)) for v in (x0, y0, x1, y1))
        boxes.append((x0, y0, x1, y1))
    return boxes


@pytest.mark.parametrize("seed", range(6))
def test_largest_free_rect_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        width, height = int(rng.integers(5, 15)), int(rng.integers(5, 15))
        boxes = random_boxes(rng, width, height, int(rng.integers(0, 5)))
        pboxes = pixel_boxes(width, height, boxes)
        expected = brute_force_best_area(width, height, pboxes)
        rect = largest_free_rect(width, height, boxes)
        if expected == 0:
            assert rect is None
            continue
        assert rect is not None
        x0, y0, x1, y1 = rect
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert not any(intersects(rect, b) for b in pboxes)
        # The raw (unrounded) boxes: no pixel of the rectangle touches any part of a box.
        for bx0, by0, bx1, by1 in boxes:
            assert not (min(x1, bx1) > max(x0, bx0) and min(y1, by1) > max(y0, by0))
        assert area(rect) == expected


@pytest.mark.parametrize("boxes, reason", [
    ([(6, 6, 2, 8)], "box_inverted"),  # x1 < x0
    ([(3, 3, 3, 7)], "box_zero_area"),
    ([(12, 0, 15, 5)], "box_outside_image"),
    ([(0.2, 0.2, 0.6, 0.7)], "box_normalised"),
    ([(1, 1, 4, 4), (2, 2, float("nan"), 3)], "box_not_finite"),
])
def test_unusable_boxes_never_crop_to_the_whole_image(boxes, reason):
    """A box that would be dropped as empty must not turn the record's crop into the whole image
    (object included): the crop is refused with the box's reason."""
    rect, why = background_crop(10, 10, boxes, min_side=1)
    assert rect is None and why == reason
