"""A whole ``protocol: dejavu-2023`` study against the published algorithm, implemented here from
the reference code's definitions (not from the product's), applied to the run's saved models and
records: the accuracies of the positive control at each q must be the report's.

Published (facebookresearch/DejaVu): the crop is the strip candidate with the largest shorter side
(box edges truncated to whole pixels; kept if that side exceeds 100 px at 224 px, scaled here to
the 32 px input), records without one are left out; the crop, and each public image, goes to the
model through Resize(256) + CenterCrop(224) (scaled: shorter side to 36, central 32 x 32); the
k = 100 nearest public images by L2 on the raw projector outputs vote with their labels; the
confidence is minus the entropy of the vote counts; the top q of n are the int(q n) most
confident. Two choices the reference leaves open are the product's here, as its report says:
tied vote counts go to the smaller label, tied confidences keep id order.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from study import storage
from study.cli import main
from study.config_load import load_config
from study.data import records
from study.data.loading import read_split
from study.frame.context import RunContext
from study.train.models import load_model, normalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, K = 32, 100
OVERRIDES = [
    "name=published", "protocol=dejavu-2023",
    "data.num_images=640", "data.num_classes=5", "data.object_scale=[0.3, 0.4]", "data.shard_size=320",
    "data.background=photo", "data.size_range=[0.6, 1.8]",  # photographs of several sizes and aspect ratios
    "splits.fractions={target: 0.15, reference: 0.15, holdout: 0.1, public: 0.6}",
    "train.epochs=15", "train.global_batch_size=64", "train.checkpoint_every=15", "train.warmup_epochs=0",
    "search.representations=[projector]", "measure.bootstrap=50", "measure.permutations=50",
]


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("published"))
    args = ["run", os.path.join(ROOT, "configs/quickstart.yaml"), "--output", out]
    for o in OVERRIDES:
        args += ["--set", o]
    assert main(args) == 0
    ctx = RunContext.create(load_config(os.path.join(ROOT, "configs/quickstart.yaml"), OVERRIDES, out))
    return ctx, storage.read_json(ctx.stage_dir("report", "report.json"))


def merge_intervals(intervals):
    intervals.sort()
    stack = [intervals[0]]
    for i in intervals[1:]:
        if stack[-1][0] <= i[0] <= stack[-1][-1]:
            stack[-1][-1] = max(stack[-1][-1], i[-1])
        else:
            stack.append(i)
    return stack


def get_crop(width, height, boxes, min_px):
    """The reference's get_crop, on (x0, y0, x1, y1) boxes: the candidate with the largest shorter
    side, the last of equal ones (a stable sort, then the last), if that side exceeds min_px."""
    xlims = sorted(v for b in boxes for v in (int(b[0]), int(b[2])))
    if xlims[0] > 0:
        xlims.insert(0, 0)
    if xlims[-1] < width:
        xlims.append(width)
    candidates = []
    for lo, hi in zip(xlims[:-1], xlims[1:]):
        ys = [[int(b[1]), int(b[3])] for b in boxes if min(int(b[2]), hi) - max(int(b[0]), lo) > 0]
        ys = merge_intervals(ys) if ys else []
        ys = [[0, 0], *ys, [height, height]]
        for a, b in zip(ys, ys[1:]):
            if b[0] > a[1] and hi > lo:
                candidates.append(((lo, a[1], hi, b[0]), min(b[0] - a[1], hi - lo)))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[1])
    return candidates[-1][0] if candidates[-1][1] > min_px else None


def to_input(image: Image.Image) -> np.ndarray:
    from torchvision import transforms

    return np.asarray(transforms.Compose([transforms.Resize(S * 256 // 224), transforms.CenterCrop(S)])(image))


def projector(ctx, model: str, images: list[np.ndarray]) -> np.ndarray:
    encoder, _ = load_model(storage.read_bytes(ctx.stage_dir("train", model, "model.pt")))
    with torch.inference_mode():
        _, z = encoder(normalize(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)))
    return z.double().numpy()


def attack(ctx, model: str, split: str):
    """(ids, correct, confidence) of the model's k-NN attack on the split's croppable records."""
    pub_ids, pub_labels = read_split(ctx.splits_dir, "public")
    ids, labels = read_split(ctx.splits_dir, split)
    table = records.read_records(ctx.data_root, list(pub_ids) + list(ids), ["id", "image", "boxes"])
    by_id = dict(zip(table.column("id").to_pylist(), zip(table.column("image").to_pylist(),
                                                          records.iter_boxes(table.column("boxes")))))
    public = projector(ctx, model, [to_input(Image.open(io.BytesIO(by_id[i][0])).convert("RGB")) for i in pub_ids])
    kept, crops = [], []
    for i, label in sorted(zip(ids, labels)):
        image = Image.open(io.BytesIO(by_id[i][0])).convert("RGB")
        rect = get_crop(image.width, image.height, by_id[i][1], round(100 * S / 224))
        if rect is not None:
            kept.append((i, label))
            crops.append(to_input(image.crop(rect)))
    z = projector(ctx, model, crops)
    d = (z ** 2).sum(1)[:, None] + (public ** 2).sum(1)[None, :] - 2 * z @ public.T
    nearest = np.argsort(d, axis=1, kind="stable")[:, :K]
    counts = np.stack([np.bincount(np.asarray(pub_labels)[row], minlength=5) for row in nearest])
    shares = counts / counts.sum(1, keepdims=True)
    confidence = (shares * np.log(np.where(shares > 0, shares, 1))).sum(1)  # minus the entropy
    correct = counts.argmax(1) == np.array([label for _, label in kept])
    return [i for i, _ in kept], correct, confidence


def top_accuracy(correct, confidence, q):
    order = np.argsort(-confidence, kind="stable")
    return correct[order[: max(1, int(q * len(correct)))]].mean()


def test_a_published_run_equals_the_published_algorithm_on_its_models_and_records(run):
    ctx, report = run
    assert report["config"]["search"]["k"] == K and report["config"]["data"]["resize"] == "imagenet_center_crop"
    sides = []
    for split, target, reference in (("target", "model_a", "model_b"), ("reference", "model_b", "model_a")):
        t_ids, t_right, t_conf = attack(ctx, target, split)
        r_ids, r_right, r_conf = attack(ctx, reference, split)
        assert t_ids == r_ids
        sides.append((t_right, t_conf, r_right, r_conf))
    entry = report["results"]["projector"]["positive"]["top1"]
    assert entry["n"] == [len(s[0]) for s in sides]
    for row in entry["by_q"]:
        q = row["q"]
        target = np.mean([top_accuracy(s[0], s[1], q) for s in sides])
        reference = np.mean([top_accuracy(s[2], s[3], q) for s in sides])
        assert row["target"]["value"] == pytest.approx(target, abs=1e-12), q
        assert row["reference"]["value"] == pytest.approx(reference, abs=1e-12), q
