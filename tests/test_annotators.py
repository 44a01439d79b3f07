"""The annotators on photographs of several sizes, each with a small random-weight model saved in the
format users have (a state dict): what a torchvision detector keeps equals running the model
directly and applying the published thresholds by hand (score >= threshold, then greedy NMS per
object), its categories mapped through a vocabulary's synonyms; an open_clip tagger's tags equal
CLIP's zero-shot classification written out in the test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from study.annotate.annotators import ANNOTATORS, TorchvisionDetector
from study.annotate.detections import Thresholds, side_row
from study.annotate.vocabulary import parse
from study.data.photos import photo
from study.errors import ConfigError, DataError

ARCH = "fasterrcnn_resnet50_fpn"
# 'bike' and 'rucksack' are not torchvision's names; no detector knows unicorns; the suitcases and
# baseball gloves the random model also finds are left out.
WORDS = "bike: bicycle\nrucksack: backpack\nbottle\nscissors\nunicorn\n"


def _detector(seed: int):
    import torchvision.models.detection as detection

    torch.manual_seed(seed)
    model = getattr(detection, ARCH)(weights=None, weights_backbone=None, num_classes=91, min_size=160,
                                     max_size=267, box_score_thresh=0.0).eval()  # image_size 160: 160 x 1333 / 800
    with torch.no_grad():  # random weights that find several categories at scores around 0.5
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    return model


def _images() -> list[Image.Image]:
    """Photographs at several sizes and aspect ratios."""
    sizes = [(200, 130), (96, 160), (150, 150)]
    return [Image.fromarray(photo(i)).convert("RGB").resize(s) for i, s in enumerate(sizes)]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _by_hand(model, images, vocabulary, th: Thresholds) -> list[list[tuple]]:
    """The model run directly, its categories named, then the thresholds in plain Python."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    from torchvision.transforms.functional import pil_to_tensor

    categories = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    with torch.no_grad():
        outputs = model([pil_to_tensor(im).float() / 255 for im in images])
    kept_all = []
    for out in outputs:
        found = [(float(s), vocabulary.canonical(categories[int(c)]), [float(v) for v in b])
                 for b, s, c in zip(out["boxes"], out["scores"], out["labels"])]
        kept_all.append(greedy_nms([f for f in found if f[1] is not None and f[0] >= th.score], th))
    return kept_all


def greedy_nms(found: list[tuple], th: Thresholds) -> list[tuple]:
    """(score, object, box) proposals above the threshold -> those kept: best first (stable: equal
    scores keep the model's order), each dropped that overlaps a kept one of its object by more
    than the IoU, then the cap."""
    kept = []
    for f in sorted(found, key=lambda f: -f[0]):
        if all(k[1] != f[1] or _iou(k[2], f[2]) <= th.nms_iou for k in kept):
            kept.append(f)
    return kept[: th.max_per_image]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _detector(3)
    path = tmp_path_factory.mktemp("weights") / "detector.pt"
    torch.save(model.state_dict(), path)  # the format torchvision's own weight files have
    return model, path


@pytest.mark.parametrize("th", [Thresholds(score=0.0, nms_iou=0.3), Thresholds(score=0.5, max_per_image=5)])
def test_a_torchvision_detector_keeps_what_the_model_and_the_thresholds_give(saved, th):
    (model, path), images = saved, _images()
    vocabulary = parse(WORDS, "test")
    annotator = ANNOTATORS["torchvision"](str(path), vocabulary, th, architecture=ARCH, image_size=160)
    got = annotator(images)
    want = _by_hand(model, images, vocabulary, th)
    assert len(got) == 3 and sum(len(w) for w in want) >= 3  # the case has detections to compare
    assert len({k[1] for w in want for k in w}) >= 2  # of several objects
    for det, kept, image in zip(got, want, images):
        assert det.objects.tolist() == [k[1] for k in kept]
        np.testing.assert_allclose(det.scores, [k[0] for k in kept], rtol=1e-6)
        np.testing.assert_allclose(det.boxes, np.array([k[2] for k in kept]).reshape(-1, 4), rtol=1e-5)
        assert 4 not in det.objects.tolist()  # never the unicorn
        if len(det):
            h, w = np.asarray(image).shape[:2]
            assert det.boxes[:, 2].max() <= w + 1e-3 and det.boxes[:, 3].max() <= h + 1e-3  # the image's pixels


@pytest.mark.parametrize("arch", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_single_stage_torchvision_detectors_keep_what_the_model_gives(arch, tmp_path):
    """RetinaNet and FCOS (random weights: scores well below 0.5, so at threshold 0 with a tight NMS
    and cap), over the COCO vocabulary, against the same oracle."""
    import torchvision.models.detection as detection

    torch.manual_seed(4)
    model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=91, min_size=160, max_size=267,
                                     score_thresh=0.0).eval()
    with torch.no_grad():  # a classifier that spreads its scores over many categories
        model.head.classification_head.cls_logits.weight.normal_(0, 0.05)
    torch.save(model.state_dict(), tmp_path / "detector.pt")
    from study.annotate.vocabulary import coco

    vocabulary, th, images = coco(), Thresholds(score=0.0, nms_iou=0.3, max_per_image=8), _images()
    got = ANNOTATORS["torchvision"](str(tmp_path / "detector.pt"), vocabulary, th, architecture=arch, image_size=160)(images)
    want = _by_hand(model, images, vocabulary, th)
    assert sum(len(w) for w in want) >= 3 and len({k[1] for w in want for k in w}) >= 2
    for det, kept in zip(got, want):
        assert det.objects.tolist() == [k[1] for k in kept]
        np.testing.assert_allclose(det.scores, [k[0] for k in kept], rtol=1e-5)
        np.testing.assert_allclose(det.boxes, np.array([k[2] for k in kept]).reshape(-1, 4), rtol=1e-4, atol=1e-3)


def test_the_fingerprint_follows_the_weights_file_and_the_settings(saved, tmp_path):
    (model, path), vocabulary, th = saved, parse(WORDS, "test"), Thresholds()
    first = TorchvisionDetector(str(path), vocabulary, th, ARCH, 160)
    torch.save({"model": model.state_dict()}, tmp_path / "wrapped.pt")  # a training script's checkpoint
    again = TorchvisionDetector(str(tmp_path / "wrapped.pt"), vocabulary, th, ARCH, 160)
    assert again.fingerprint != first.fingerprint  # another file: the stage's hash changes
    assert [d.objects.tolist() for d in again(_images())] == [d.objects.tolist() for d in first(_images())]
    assert TorchvisionDetector(str(path), vocabulary, th, ARCH, 160).fingerprint == first.fingerprint
    assert TorchvisionDetector(str(path), vocabulary, th, ARCH, 192).fingerprint != first.fingerprint


def test_weights_of_another_model_or_not_weights_are_one_clear_error(tmp_path):
    vocabulary = parse(WORDS, "test")
    torch.save({"backbone.body.conv1.weight": torch.zeros(1), "head.extra": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"annotate.weights: .*other\.pt does not fit the model: \d+ weight\(s\) "
                                         r"missing \(e\.g\. \['backbone\.body.*1 unexpected .*'head\.extra'.*1 of another shape"):
        TorchvisionDetector(str(tmp_path / "other.pt"), vocabulary, Thresholds(), "fcos_resnet50_fpn", 160)
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(DataError, match="notes.pt is not a PyTorch state dict that loads as weights only"):
        TorchvisionDetector(str(tmp_path / "notes.pt"), vocabulary, Thresholds(), ARCH, 160)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    import open_clip

    from study.train.clip import register_model_configs

    register_model_configs()
    torch.manual_seed(5)
    model = open_clip.create_model("dejavu-tiny")
    path = tmp_path_factory.mktemp("clip") / "open_clip_model.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _tags_by_hand(model, images, vocabulary, templates, th: Thresholds, max_tags: int) -> list[list[tuple]]:
    """CLIP zero-shot classification written out: prompts, cosine similarities, softmax, each
    object's best query, the most probable objects at or above the threshold."""
    import open_clip

    tokenizer, queries = open_clip.get_tokenizer("dejavu-tiny"), vocabulary.queries()
    _, _, preprocess = open_clip.create_model_and_transforms("dejavu-tiny")
    with torch.no_grad():
        text = []
        for q, _ in queries:
            feats = model.encode_text(tokenizer([t.format(q) for t in templates]))
            feats = feats / feats.norm(dim=-1, keepdim=True)
            mean = feats.mean(dim=0)
            text.append(mean / mean.norm())
        out = []
        for im in images:
            f = model.encode_image(preprocess(im.convert("RGB"))[None])[0]
            f = f / f.norm()
            logits = [float(model.logit_scale.exp() * (f @ t)) for t in text]
            z = np.exp(np.array(logits) - max(logits))
            probs = z / z.sum()
            best = {}
            for (q, o), p in zip(queries, probs):
                best[o] = max(best.get(o, -1.0), p)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
            out.append([(o, p) for o, p in ranked if p >= th.score][:max_tags])
    return out


@pytest.mark.parametrize("th, max_tags", [(Thresholds(score=0.0), 3), (Thresholds(score=0.2), 5)])
def test_an_open_clip_tagger_gives_the_zero_shot_tags_written_out(clip_weights, th, max_tags):
    model, path = clip_weights
    vocabulary, templates = parse(WORDS, "test"), ("a photo of a {}.", "a picture of the {}")
    tagger = ANNOTATORS["open_clip"](str(path), vocabulary, th, "dejavu-tiny", templates, max_tags)
    images = _images()
    want = _tags_by_hand(model, images, vocabulary, templates, th, max_tags)
    got = tagger(images)
    assert tagger.to("cpu") is tagger and tagger.text.device.type == "cpu"  # a replica's move (to a GPU where one is)
    again = tagger(images)
    assert [d.objects.tolist() for d in again] == [d.objects.tolist() for d in got]
    assert sum(len(w) for w in want) >= 2  # the case has tags to compare
    for det, tags in zip(got, want):
        assert det.boxes is None and det.objects.tolist() == [o for o, _ in tags]
        np.testing.assert_allclose(det.scores, [p for _, p in tags], rtol=1e-4)
    row = side_row("k", got[0], vocabulary.names) if len(got[0]) else None
    assert row is None or (row["boxes"] == [] and row["label"] == int(got[0].objects[0]))


def test_a_tagger_with_weights_of_another_model_is_one_clear_error(tmp_path):
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"annotate.weights: .*other\.pt does not fit open_clip's dejavu-tiny"):
        ANNOTATORS["open_clip"](str(tmp_path / "other.pt"), parse(WORDS, "test"), Thresholds(), "dejavu-tiny")
    with pytest.raises(ConfigError, match="each prompt template must hold"):
        ANNOTATORS["open_clip"](str(tmp_path / "other.pt"), parse(WORDS, "test"), Thresholds(), "dejavu-tiny", ("a photo",))
