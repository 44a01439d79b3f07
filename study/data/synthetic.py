"""Synthetic scenes: known objects on distinct backgrounds, any count and size.

Each image gets its own two-tone texture background (stripes at a random angle and frequency,
optionally crossed) and one or more digit glyphs of distinct classes, coloured by class hue, with
exact pixel boxes. ``correlation`` is the probability that an image's background colours come from
its label's palette instead of at random: 0 leaves the background uninformative about the label
(anything a reference model infers from a crop is chance), 1 makes the background predict it.
``cooccurrence`` is the object-level analogue for the vision-language study: the probability that
each further object comes from the first object's group of classes, so an image's objects predict
one another across the dataset.

The caption names the first ``caption_objects`` objects and describes the background (colours by
name, pattern, stripe width and orientation): the description is specific to the image, so a
CLIP-style model can bind caption to image and, when it memorizes, recall the unnamed objects.

``background: photo`` cuts each background from a real photograph instead (``study.data.photos``),
and ``size_range`` stores each scene at its own width and height (several sizes and aspect
ratios, as users' photographs come), its boxes scaled with it.

Image i depends only on (seed, i), so shards can be generated in any order or in parallel.
"""
from __future__ import annotations

import colorsys
from typing import Iterator

import numpy as np
from PIL import Image

from study.config import DataConfig
from study.data import photos, records

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
BACKGROUNDS = ("texture_color", "texture_gray", "photo")  # photo: study.data.photos
PROMPT = "the digit {}"  # how captions name an object; the zero-shot prompt template
GROUP_SIZE = 4  # co-occurrence groups: classes 0-3, 4-7, ...
PLACEMENT_TRIES = 30
# Hue names by upper bound in degrees (red wraps around 360).
_HUES = [(15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "teal"), (255, "blue"),
         (290, "purple"), (345, "pink"), (360, "red")]
_GREYS = [(0.15, "black"), (0.4, "dark grey"), (0.65, "grey"), (0.85, "light grey"), (1.01, "white")]
# Every word a background description can use; none may be a class name (tests check).
DESCRIPTION_WORDS = frozenset(
    {h for _, h in _HUES} | {w for _, g in _GREYS for w in g.split()}
    | {"light", "dark", "and", "striped", "checked", "background", "with", "wide", "narrow", "stripes",
       "horizontal", "vertical", "rising", "falling", "diagonal", "straight", "a", "on"}
)


def class_name(c: int) -> str:
    return DIGIT_WORDS[c % 10] + ("" if c < 10 else f"-{c // 10}")


def class_colour(c: int, num_classes: int) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(c / num_classes, 0.9, 1.0)
    return np.array([r, g, b]) * 255.0


def _object_classes(rng, cfg: DataConfig) -> list[int]:
    """Distinct classes; the first is uniform. The draw order for one object is the original one
    (count, then class), which keeps single-object datasets bit-identical to earlier versions."""
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    labels = [int(rng.integers(0, cfg.num_classes))]
    start = labels[0] // GROUP_SIZE * GROUP_SIZE
    group = range(start, min(start + GROUP_SIZE, cfg.num_classes))
    for _ in range(n_obj - 1):
        unused = [c for c in range(cfg.num_classes) if c not in labels]
        # The coin is drawn only when the knob is on, so cooccurrence=0 keeps its draws unchanged.
        if cfg.cooccurrence > 0 and rng.random() < cfg.cooccurrence:
            unused = [c for c in group if c not in labels] or unused  # group exhausted: any class
        labels.append(unused[int(rng.integers(len(unused)))])
    return labels


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


def _texture(rng, size: int, colours: np.ndarray) -> tuple[np.ndarray, dict]:
    """Textured background (size, size, 3) float and its parameters (for the caption)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(1.5, 6.0) / size
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    crossed = bool(rng.random() < 0.5)  # crossed pattern (checks) for half of the images
    if crossed:
        theta2 = theta + np.pi / 2
        wave = wave * np.sin(2 * np.pi * freq * (xx * np.cos(theta2) + yy * np.sin(theta2)))
    mix = (wave > 0).astype(np.float64)[..., None]
    img = colours[0] * (1 - mix) + colours[1] * mix
    return img + rng.normal(0, 6.0, size=img.shape), {"theta": theta, "cycles": freq * size, "crossed": crossed}


def colour_name(rgb) -> str:
    """A small named palette: hue names with light/dark, or a grey scale for unsaturated colours."""
    r, g, b = np.clip(np.asarray(rgb, dtype=np.float64), 0, 255) / 255.0
    hue, lightness, _ = colorsys.rgb_to_hls(r, g, b)
    value, chroma = max(r, g, b), max(r, g, b) - min(r, g, b)
    if value < 0.2 or chroma < 0.2 * value:
        return next(name for bound, name in _GREYS if lightness < bound)
    base = next(name for bound, name in _HUES if hue * 360 < bound)
    return ("dark " if lightness < 0.35 else "light " if lightness > 0.65 else "") + base


def describe_background(colours: np.ndarray, texture: dict) -> str:
    """E.g. "dark blue and light orange checked background with narrow straight stripes"."""
    names = [colour_name(c) for c in colours]
    tones = names[0] if names[0] == names[1] else f"{names[0]} and {names[1]}"
    # theta is the wave's direction (y points down); the stripes run across it.
    octant = int(texture["theta"] / (np.pi / 8))  # 0..7
    if texture["crossed"]:
        # A crossed wave looks the same at theta and theta + 90 degrees: only straight vs diagonal.
        orientation = "diagonal" if octant in (1, 2, 5, 6) else "straight"
    else:
        orientation = ["vertical", "rising diagonal", "rising diagonal", "horizontal", "horizontal",
                       "falling diagonal", "falling diagonal", "vertical"][octant]
    width = "wide" if texture["cycles"] < 3.75 else "narrow"  # 3.75: median of the 1.5-6 cycles drawn
    pattern = "checked" if texture["crossed"] else "striped"
    return f"{tones} {pattern} background with {width} {orientation} stripes"


def _glyph_mask(rng, label: int, size: int, cfg: DataConfig) -> np.ndarray:
    """A glyph's bold ink mask (h, w) at a random scale."""
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
    return bold


def _overlap(a: tuple, b: tuple) -> int:
    """Intersection area of two half-open boxes (x0, y0, x1, y1)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _place(rng, mask: np.ndarray, size: int, taken: list[tuple]) -> tuple[int, int]:
    """Top-left corner for ``mask`` whose ink box avoids ``taken``; after PLACEMENT_TRIES draws
    the least-overlapping one (dense scenes may not fit). The first object takes one draw, as it
    always did, which keeps single-object images unchanged."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    best, best_overlap = None, None
    for _ in range(PLACEMENT_TRIES if taken else 1):
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
        overlap = sum(_overlap(box, t) for t in taken)
        if best is None or overlap < best_overlap:
            best, best_overlap = (x0, y0), overlap
        if overlap == 0:
            break
    return best


def make_record(index: int, cfg: DataConfig) -> dict:
    """Record ``index`` of the synthetic dataset (a dict of the record schema's columns)."""
    rng = np.random.default_rng([cfg.seed, index])
    size = cfg.image_size
    labels = _object_classes(rng, cfg)
    if cfg.background == "photo":
        img, background = photos.background(rng, labels[0], size, cfg.correlation)
    else:
        colours = _background_colours(rng, labels[0], cfg)
        img, texture = _texture(rng, size, colours)
        background = describe_background(colours, texture)
    boxes, taken = [], []
    for lab in labels:
        mask = _glyph_mask(rng, lab, size, cfg)
        x0, y0 = _place(rng, mask, size, taken)
        h, w = mask.shape
        img[y0 : y0 + h, x0 : x0 + w][mask] = class_colour(lab, cfg.num_classes)
        ys, xs = np.nonzero(mask)  # the box is the ink's extent, not the glyph cell's
        taken.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
        boxes.append(dict(zip(("x0", "y0", "x1", "y1"), taken[-1]), label=lab))
    names = [class_name(lab) for lab in labels]
    named = names[: cfg.caption_objects]
    caption = f"the digit {' and the digit '.join(named)} on a {background}" if named else f"a {background}"
    pixels = np.clip(img, 0, 255).astype(np.uint8)
    if tuple(cfg.size_range) != (1.0, 1.0):  # drawn last: the scene itself is the same at any size
        pixels, boxes = _rescaled(rng, pixels, boxes, cfg.size_range)
    return {
        "id": f"syn-{cfg.seed}-{index:08d}",
        "image": records.encode_png(pixels),
        "width": pixels.shape[1],
        "height": pixels.shape[0],
        "label": labels[0],
        "boxes": boxes,
        "caption": caption,
        "objects": sorted(names),
    }


def _rescaled(rng, pixels: np.ndarray, boxes: list[dict], size_range) -> tuple[np.ndarray, list[dict]]:
    """The scene at width and height each scaled by a log-uniform factor in ``size_range`` (so
    sizes and aspect ratios vary, portrait and landscape), its boxes scaled to still cover the ink."""
    size = pixels.shape[0]
    lo, hi = np.log(size_range[0]), np.log(size_range[1])
    w, h = (max(4, int(round(size * np.exp(rng.uniform(lo, hi))))) for _ in range(2))
    sx, sy = w / size, h / size
    image = np.asarray(Image.fromarray(pixels).resize((w, h), Image.BILINEAR))
    scaled = [{"x0": int(np.floor(b["x0"] * sx)), "y0": int(np.floor(b["y0"] * sy)),
               "x1": min(w, int(np.ceil(b["x1"] * sx))), "y1": min(h, int(np.ceil(b["y1"] * sy))), "label": b["label"]}
              for b in boxes]
    return image, scaled


def iter_shards(cfg: DataConfig) -> Iterator[tuple[int, dict[str, list]]]:
    """(shard index, columns) for consecutive blocks of ``cfg.shard_size`` records."""
    for shard, start in enumerate(range(0, cfg.num_images, cfg.shard_size)):
        rows = [make_record(i, cfg) for i in range(start, min(start + cfg.shard_size, cfg.num_images))]
        yield shard, {name: [r[name] for r in rows] for name in records.RECORD_SCHEMA.names}
