"""Photographic backgrounds for the synthetic generator (``data.background: photo``).

Real photographs instead of drawn stripes: each scene's background is a square region of one of
the sample photographs that scikit-image ships with its package (so nothing is downloaded), at a
random place and zoom, mirrored half of the time. With ``data.correlation`` the photograph comes
from the label's own one (label modulo the number of photographs) with that probability, else at
random; the caption names the photograph, the region and the zoom, so a CLIP-style model can bind
caption to image. This makes inputs that look like users' photographs (JPEG texture, natural
colour statistics, greyscale sources) for the real-data path's smoke tests and the photo example;
it says nothing about memorization on real data.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

# (file in skimage/data, what the caption calls it); no word may be a class name (tests check).
PHOTOS = (
    ("brick.png", "brick wall"), ("grass.png", "grass"), ("gravel.png", "gravel"), ("coffee.png", "coffee cup"),
    ("chelsea.png", "cat"), ("astronaut.png", "astronaut"), ("rocket.jpg", "rocket launch"),
    ("motorcycle_left.png", "motorcycle"), ("hubble_deep_field.jpg", "galaxy field"), ("retina.jpg", "retina"),
    ("ihc.png", "stained tissue"), ("coins.png", "coin collection"), ("camera.png", "photographer"),
    ("moon.png", "moon surface"),
)
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


@functools.lru_cache(maxsize=None)
def photo(index: int) -> np.ndarray:
    """Photograph ``index`` of ``PHOTOS`` as (H, W, 3) uint8 (loaded once per process)."""
    import importlib.resources

    from study.errors import ConfigError

    try:
        root = importlib.resources.files("skimage") / "data"
    except ModuleNotFoundError:
        raise ConfigError("data.background: photo needs scikit-image's sample photographs "
                          "(pip install 'dejavu-study[photos]')") from None
    with Image.open(root / PHOTOS[index][0]) as im:
        return np.asarray(im.convert("RGB"))


def background(rng: np.random.Generator, label: int, size: int, correlation: float) -> tuple[np.ndarray, str]:
    """A (size, size, 3) float background cut from a photograph, and its description."""
    correlated = rng.random() < correlation
    index = label % len(PHOTOS) if correlated else int(rng.integers(len(PHOTOS)))
    image = photo(index)
    h, w = image.shape[:2]
    zoom = rng.uniform(0.3, 1.0)
    side = max(8, int(round(zoom * min(h, w))))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    region = Image.fromarray(image[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        region = region.transpose(Image.FLIP_LEFT_RIGHT)
    row = _ROWS[min(2, int(3 * (y0 + side / 2) / h))]
    col = _COLS[min(2, int(3 * (x0 + side / 2) / w))]
    where = "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"
    closeness = "close up" if zoom < 0.55 else "wide view"
    return np.asarray(region, np.float64), f"photo of {PHOTOS[index][1]}, {closeness} of the {where}"
