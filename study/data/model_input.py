"""From a record's image to a model input: the one rule every path applies.

Records keep their images as stored, at any size, aspect ratio and mode. Whatever shows an image
to a model — in-memory and streamed training (the SSL methods, CLIP-style pairs, the crop
classifier), the embed stage's whole images, background crops, caption images and SSLMem's views,
the linear probe, the zero-shot utility and the report's galleries — turns it into an
(S, S, 3) uint8 array through ``ModelInput``, so a record is the same tensor wherever it is used.

Three resize rules (``RESIZE_RULES``, ``data.resize``):

- ``squash``: the whole image (or crop) resized to S x S, bilinear; the aspect ratio is not kept,
  and every pixel of a crop reaches the model. The default, and what the product always did with
  images already of size S (left untouched).
- ``center_crop``: the shorter side resized to S (bilinear, aspect ratio kept), then the central
  S x S square: torchvision's ``Resize(S)`` followed by ``CenterCrop(S)`` (open_clip's evaluation
  transform, there with bicubic resampling). The ends of the longer side are cut off.
- ``imagenet_center_crop``: the shorter side resized to floor(S * 256 / 224) (256 at S = 224),
  then the central S x S square: ``Resize(256)`` followed by ``CenterCrop(224)`` at ImageNet's
  scale, the published SSL protocol's rule; a margin of 1/8 of the shorter side is cut off too.
- ``open_clip``: ``center_crop`` with bicubic resampling, open_clip's evaluation transform
  (resize mode "shortest"), as the published VLM study and CLIP models trained elsewhere see images.

Decoding: any mode Pillow reads becomes RGB (16-bit greyscale scaled to 8 bits, not clipped); a
large JPEG whose whole image is wanted is decoded at the smallest DCT scale that still gives at
least S pixels on each side (Pillow's ``draft``), which makes decoding a 12-megapixel photo for a
64-pixel model about ten times cheaper. Crops are cut from the full-resolution image, since their
rectangles are in the stored image's pixels. EXIF orientation is not applied: boxes are in the
stored pixel frame, as COCO and VOC annotations are.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (half-open, pixels of the stored image)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _squash(image: Image.Image, size: int) -> Image.Image:
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.BILINEAR)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    # torchvision's own functions on the PIL image: the same output sizes and crop offsets (its
    # rounding rules) as the published protocol's transforms.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    if min(image.size) != size:
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR)
    return F.center_crop(image, size) if image.size != (size, size) else image


def _imagenet_center_crop(image: Image.Image, size: int) -> Image.Image:
    # The evaluation transform's ratio (crop 224 of 256), at any model input size; floor, as
    # timm sizes it (math.floor(size / crop_pct)).
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    scaled = size * 256 // 224
    if min(image.size) != scaled:
        image = F.resize(image, scaled, interpolation=InterpolationMode.BILINEAR)
    return F.center_crop(image, size)


def _open_clip(image: Image.Image, size: int) -> Image.Image:
    # open_clip's evaluation transform (resize mode "shortest", bicubic): center_crop's geometry,
    # resampled as open_clip models are evaluated.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    if min(image.size) != size:
        image = F.resize(image, size, interpolation=InterpolationMode.BICUBIC)
    return F.center_crop(image, size) if image.size != (size, size) else image


RESIZE_RULES: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "squash": _squash,
    "center_crop": _center_crop,
    "imagenet_center_crop": _imagenet_center_crop,
    "open_clip": _open_clip,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; 16-bit greyscale keeps its range (scaled, not clipped)."""
    if image.mode in _SIXTEEN_BIT:
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))  # mode L
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class ModelInput:
    """Model inputs of side ``size`` under resize ``rule`` (see the module docstring)."""

    size: int
    rule: str = "squash"

    @classmethod
    def of(cls, data_cfg) -> "ModelInput":
        """How every stage turns a record's image into a model input, for a ``data`` config section."""
        return cls(data_cfg.image_size, data_cfg.resize)

    def __post_init__(self) -> None:
        if self.rule not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.rule!r}; expected one of {sorted(RESIZE_RULES)}")

    def of_array(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) uint8."""
        if image.shape[:2] == (self.size, self.size):
            return image
        return np.asarray(RESIZE_RULES[self.rule](Image.fromarray(image), self.size))

    def of_bytes(self, data: bytes, rect: Rect | None = None) -> np.ndarray:
        """Encoded image bytes (or the ``rect`` of it) -> (S, S, 3) uint8."""
        with Image.open(io.BytesIO(data)) as im:
            if rect is None:
                im.draft("RGB", (self.size, self.size))  # JPEG only; never below S on either side
                image = to_rgb(im)
            else:
                image = to_rgb(im).crop(rect)
            image.load()
        return np.asarray(RESIZE_RULES[self.rule](image, self.size))

    def stack(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, S, S, 3) uint8 of inputs already of this size; (0, S, S, 3) when there are none."""
        return np.stack(images) if len(images) else np.zeros((0, self.size, self.size, 3), np.uint8)


def channels_first(pixels: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) -> (n, 3, S, S), contiguous: the layout the training loops take."""
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
