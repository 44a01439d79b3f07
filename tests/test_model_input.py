"""One rule from a record's image to a model input (``study.data.model_input``), checked against
hand-worked cases and the libraries' own transforms; and the generator's images of mixed sizes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from study.config import DataConfig
from study.config_load import config_hash, load_config
from study.data import records, synthetic
from study.data.laion import inspect_image
from study.data.model_input import ModelInput
from study.errors import ConfigError


def _encoded(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with noise: resizing them is well conditioned."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    image = np.stack([255 * xx / w, 255 * yy / h, 128 + 60 * np.sin(xx / 7.0)], axis=-1) + rng.normal(0, 4, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_an_image_of_the_input_size_is_left_as_it_is():
    image = _photo(16, 16)
    for rule in ("squash", "center_crop"):
        assert ModelInput(16, rule).of_array(image) is image
        np.testing.assert_array_equal(ModelInput(16, rule).of_bytes(records.encode_png(image)), image)


def test_squash_is_a_bilinear_resize_of_the_whole_image():
    image = _photo(50, 20)
    want = np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR))
    np.testing.assert_array_equal(ModelInput(16).of_array(image), want)
    np.testing.assert_array_equal(ModelInput(16).of_bytes(records.encode_png(image)), want)


def test_center_crop_keeps_the_central_square_of_the_shorter_side():
    # Shorter side already 10: no resize, the crop starts at (30 - 10) / 2 = 10 (landscape) ...
    image = _photo(30, 10)
    np.testing.assert_array_equal(ModelInput(10, "center_crop").of_array(image), image[:, 10:20])
    # ... and at round((25 - 10) / 2) = round(7.5) = 8 (portrait; Python rounds half to even).
    tall = _photo(10, 25)
    np.testing.assert_array_equal(ModelInput(10, "center_crop").of_array(tall), tall[8:18, :])


def test_center_crop_equals_torchvision_resize_then_center_crop():
    from torchvision import transforms

    for w, h in [(64, 40), (33, 90), (12, 9)]:
        image = _photo(w, h, seed=w)
        pipeline = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])
        want = np.asarray(pipeline(Image.fromarray(image)))
        np.testing.assert_array_equal(ModelInput(16, "center_crop").of_array(image), want)


def test_the_open_clip_rule_equals_open_clips_own_evaluation_transform():
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from torchvision.transforms import Normalize

    transform = open_clip.image_transform(16, is_train=False)
    for w, h in [(64, 40), (33, 90), (12, 9)]:
        image = _photo(w, h, seed=w)
        want = transform(Image.fromarray(image))
        ours = torch.from_numpy(ModelInput(16, "open_clip").of_array(image)).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)(ours), want, atol=1e-6, rtol=0)
        assert not np.array_equal(ModelInput(16, "open_clip").of_array(image), ModelInput(16, "center_crop").of_array(image))


def test_the_published_rule_keeps_the_central_224_of_256():
    """Resize(256) then CenterCrop(224), scaled to the input: at S = 224 exactly torchvision's
    pipeline; a 3 x 1 crop at S = 7 (shorter side to 8) keeps the central 7 x 7 of its 24 x 8."""
    from torchvision import transforms

    image = _photo(300, 260, seed=3)
    want = np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(Image.fromarray(image)))
    np.testing.assert_array_equal(ModelInput(224, "imagenet_center_crop").of_array(image), want)
    strip = _photo(24, 8, seed=4)  # already at the scaled size: no resize, the central 7 x 7
    left, top = round((24 - 7) / 2), round((8 - 7) / 2)  # torchvision's offsets: int(round(...))
    np.testing.assert_array_equal(ModelInput(7, "imagenet_center_crop").of_array(strip),
                                  strip[top:top + 7, left:left + 7])


def test_a_crop_is_cut_from_the_full_resolution_image():
    image = _photo(60, 45)
    data = _encoded(Image.fromarray(image), "JPEG", quality=95)
    full = records.decode_image(data)
    for rule in ("squash", "center_crop"):
        inputs = ModelInput(16, rule)
        np.testing.assert_array_equal(inputs.of_bytes(data, (5, 7, 41, 30)), inputs.of_array(full[7:30, 5:41]))


def test_a_large_jpeg_decodes_at_a_reduced_scale_close_to_the_full_decode():
    image = _photo(640, 480)
    data = _encoded(Image.fromarray(image), "JPEG", quality=95)
    fast = ModelInput(32).of_bytes(data)
    full = ModelInput(32).of_array(records.decode_image(data))
    assert fast.shape == (32, 32, 3) and not np.array_equal(fast, full)  # a smaller DCT scale was decoded
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("CMYK", "JPEG"),
                                      ("1", "PNG"), ("RGB", "WEBP"), ("RGB", "TIFF"), ("RGB", "GIF")])
def test_every_mode_becomes_an_rgb_input(mode, fmt):
    data = _encoded(Image.fromarray(_photo(40, 24)).convert(mode), fmt)
    assert inspect_image(data) == (40, 24)
    for rule in ("squash", "center_crop"):
        out = ModelInput(16, rule).of_bytes(data)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_sixteen_bit_greyscale_keeps_its_range():
    grey = np.array([[0, 256, 32768, 65535]], np.uint16).repeat(4, axis=0)
    data = _encoded(Image.fromarray(grey))  # uint16: mode I;16
    assert records.decode_image(data)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert ModelInput(4).of_bytes(data)[0, :, 1].tolist() == [0, 1, 128, 255]


def test_the_rule_is_configured_checked_and_hashed_only_when_set():
    assert ModelInput.of(DataConfig()) == ModelInput(32, "squash")
    assert ModelInput.of(load_config(None, ["data.resize=center_crop"]).data) == ModelInput(32, "center_crop")
    with pytest.raises(ConfigError, match="data.resize"):
        load_config(None, ["data.resize=stretch"])
    with pytest.raises(ConfigError, match="data.size_range"):
        load_config(None, ["data.size_range=[0.1, 2]"])
    # Keys added after runs existed leave the hash of a config that does not set them unchanged.
    assert config_hash(DataConfig()) == config_hash(DataConfig(resize="squash", size_range=(1.0, 1.0)))
    assert config_hash(DataConfig()) != config_hash(DataConfig(resize="center_crop"))
    assert config_hash(DataConfig()) != config_hash(DataConfig(size_range=(0.5, 2.0)))


def test_the_generator_makes_several_sizes_and_aspect_ratios_with_boxes_on_the_ink():
    base = DataConfig(image_size=32, objects_per_image=(1, 2), seed=3)
    mixed = DataConfig(**{**vars(base), "size_range": (0.5, 2.0)})
    shapes = set()
    for i in range(40):
        a, b = synthetic.make_record(i, base), synthetic.make_record(i, mixed)
        assert (a["caption"], a["label"], a["objects"]) == (b["caption"], b["label"], b["objects"])
        image = records.decode_image(b["image"])
        h, w = image.shape[:2]
        assert (b["width"], b["height"]) == (w, h) and 16 <= w <= 64 and 16 <= h <= 64
        shapes.add((w, h))
        sx, sy = w / 32, h / 32
        for box_a, box_b in zip(a["boxes"], b["boxes"]):  # the scaled box covers the scaled ink box
            assert box_b["x0"] <= box_a["x0"] * sx and box_b["x1"] >= min(w, box_a["x1"] * sx) - 1e-9
            assert box_b["y0"] <= box_a["y0"] * sy and box_b["y1"] >= min(h, box_a["y1"] * sy) - 1e-9
            assert 0 <= box_b["x0"] < box_b["x1"] <= w and 0 <= box_b["y0"] < box_b["y1"] <= h
    assert len(shapes) > 30 and any(w > h for w, h in shapes) and any(h > w for w, h in shapes)


def test_photo_backgrounds_come_from_real_photographs():
    from study.data.photos import PHOTOS

    cfg = DataConfig(image_size=32, background="photo", seed=1)
    records_ = [synthetic.make_record(i, cfg) for i in range(30)]
    named = {p[1] for p in PHOTOS}
    assert all(any(f"photo of {n}," in r["caption"] for n in named) for r in records_)
    words = {w for n in named for w in n.split()}
    assert not words & {synthetic.class_name(c) for c in range(10)}  # a background never names a class
    # With correlation 1 the label picks the photograph.
    tied = DataConfig(image_size=32, background="photo", correlation=1.0, seed=1)
    for i in range(20):
        r = synthetic.make_record(i, tied)
        assert f"photo of {PHOTOS[r['label'] % len(PHOTOS)][1]}," in r["caption"]
