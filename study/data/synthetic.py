"""Synthetic scenes (DESIGN §3): known objects on distinct backgrounds, any count and size.

Each image gets its own two-tone texture background (stripes at a random angle and frequency,
optionally crossed) and one or more digit glyphs, coloured by class hue, with exact pixel boxes.
``correlation`` is the probability that an image's background colours come from its label's
palette instead of at random: 0 leaves the background uninformative about the label (anything a
reference model infers from a crop is chance), 1 makes the background predict it.

Image i depends only on (seed, i), so shards can be generated in any order or in parallel.
"""
from __future__ import annotations

import colorsys
from typing import Iterator

import numpy as np
from PIL import Image

from study.config import DataConfig
from study.data import records

# 5x7 bitmaps of the digits 0-9 (rows top to bottom, '#' = ink).
_GLYPHS = [
    [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
]
GLYPH_MASKS = [np.array([[c == "#" for c in row] for row in g], dtype=bool) for g in _GLYPHS]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
BACKGROUNDS = ("texture_color", "texture_gray")


def class_name(c: int) -> str:
    return DIGIT_WORDS[c % 10] + ("" if c < 10 else f"-{c // 10}")


def class_colour(c: int, num_classes: int) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(c / num_classes, 0.9, 1.0)
    return np.array([r, g, b]) * 255.0


def _background_colours(rng, label, cfg: DataConfig) -> np.ndarray:
    """Two colours (2, 3); from the label's palette with probability ``correlation``."""
    correlated = rng.random() < cfg.correlation
    gray = cfg.background == "texture_gray"
    if correlated:
        if gray:
            level = (40 + 175 * (label + 0.5) / cfg.num_classes) * rng.uniform(0.95, 1.05)
            return np.array([[level] * 3, [0.6 * level] * 3])
        hue = (label + 0.5) / cfg.num_classes
        return np.array([colorsys.hsv_to_rgb(hue, rng.uniform(0.3, 0.6), v) for v in (0.45, 0.7)]) * 255.0
    if gray:
        return np.repeat(rng.uniform(0, 255, size=(2, 1)), 3, axis=1)
    return rng.uniform(0, 255, size=(2, 3))


def _texture(rng, size: int, colours: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(1.5, 6.0) / size
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:  # crossed pattern (checks) for half of the images
        theta2 = theta + np.pi / 2
        wave = wave * np.sin(2 * np.pi * freq * (xx * np.cos(theta2) + yy * np.sin(theta2)))
    mix = (wave > 0).astype(np.float64)[..., None]
    img = colours[0] * (1 - mix) + colours[1] * mix
    return img + rng.normal(0, 6.0, size=img.shape)


def _glyph(rng, label: int, size: int, cfg: DataConfig):
    """Draw a glyph's mask and place it: returns (mask (h, w), x0, y0)."""
    h = max(7, int(round(rng.uniform(*cfg.object_scale) * size)))
    w = max(5, int(round(h * 5 / 7)))
    mask = np.asarray(
        Image.fromarray(GLYPH_MASKS[label % 10].astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    ) > 127
    # Bold strokes (one pixel wider to the right and down): a one-pixel stroke all but vanishes
    # under a CPU-sized model's stride-4 stem.
    bold = mask.copy()
    bold[:, 1:] |= mask[:, :-1]
    bold[1:, :] |= mask[:-1, :]
    mask = bold
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    return mask, x0, y0


def make_record(index: int, cfg: DataConfig) -> dict:
    """Record ``index`` of the synthetic dataset (a dict of the record schema's columns)."""
    rng = np.random.default_rng([cfg.seed, index])
    size = cfg.image_size
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    labels = [int(rng.integers(0, cfg.num_classes)) for _ in range(n_obj)]
    img = _texture(rng, size, _background_colours(rng, labels[0], cfg))
    boxes = []
    for lab in labels:
        mask, x0, y0 = _glyph(rng, lab, size, cfg)
        h, w = mask.shape
        img[y0 : y0 + h, x0 : x0 + w][mask] = class_colour(lab, cfg.num_classes)
        ys, xs = np.nonzero(mask)  # the box is the ink's extent, not the glyph cell's
        boxes.append(
            {"x0": x0 + xs.min(), "y0": y0 + ys.min(), "x1": x0 + xs.max() + 1, "y1": y0 + ys.max() + 1, "label": lab}
        )
    names = [class_name(lab) for lab in labels]
    tone = "grey" if cfg.background == "texture_gray" else "coloured"
    return {
        "id": f"syn-{cfg.seed}-{index:08d}",
        "image": records.encode_png(np.clip(img, 0, 255).astype(np.uint8)),
        "width": size,
        "height": size,
        "label": labels[0],
        "boxes": boxes,
        "caption": f"the digit {' and the digit '.join(names)} on a {tone} patterned background",
        "objects": sorted(set(names)),
    }


def iter_shards(cfg: DataConfig) -> Iterator[tuple[int, dict[str, list]]]:
    """(shard index, columns) for consecutive blocks of ``cfg.shard_size`` records."""
    for shard, start in enumerate(range(0, cfg.num_images, cfg.shard_size)):
        rows = [make_record(i, cfg) for i in range(start, min(start + cfg.shard_size, cfg.num_images))]
        yield shard, {name: [r[name] for r in rows] for name in records.RECORD_SCHEMA.names}
