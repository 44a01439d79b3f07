"""The published studies' configs (configs/paper/) run end to end on tiny stand-ins of what they
ask the user for, through --set overrides of paths, sizes and epochs only: ImageNet-style class
folders with VOC boxes, a partition table and two encoders in the official VICReg checkpoint
layout (SSL); img2dataset webdataset shards with an objects table, a partition table, two
open_clip_train checkpoints and a transformers text encoder (VLM); a Hugging Face dataset on disk
(SSLMem). Each keeps its study kind, protocol and the roles of the files it names, so a config
that no longer loads, or names a key the product lost, fails here."""
from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from study import storage
from study.cli import main
from study.config_load import load_config
from study.frame.context import RunContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(ROOT, "configs", "paper")
SMALL = ["measure.bootstrap=50", "measure.permutations=50", "measure.utility_records=40", "search.shards=1"]


def _run(config: str, out: str, overrides: list[str]) -> RunContext:
    args = ["run", os.path.join(PAPER, config), "--output", out]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    return RunContext.create(load_config(os.path.join(PAPER, config), overrides, out))


def _partition(ids: list[str], path: str) -> str:
    """target, reference, shared, holdout, public by position: a partition table as users write one."""
    names = ["target", "reference", "shared", "holdout", "public", "public"]
    pq.write_table(pa.table({"id": ids, "split": [names[i % len(names)] for i in range(len(ids))]}), path)
    return path


def test_the_published_ssl_config_on_a_tiny_stand_in(ray_local, tmp_path):
    from study.config import ModelConfig
    from study.train.methods import method_params
    from study.train.models import build_encoder

    assert main(["data", "synth", "--format", "voc", "--num", "300", "--output", str(tmp_path / "imagenet"),
                 "--set", "data.image_size=32", "--set", "data.num_classes=4"]) == 0
    ids = sorted(os.path.splitext(f)[0] for _, _, fs in os.walk(tmp_path / "imagenet" / "images") for f in fs)
    files = {}
    for i, model in enumerate(("a", "b")):  # the official VICReg full checkpoint's layout
        torch.manual_seed(i)
        encoder = build_encoder(ModelConfig(backbone="small_cnn", projector_dims=(32, 32, 16)), "vicreg",
                                method_params("vicreg", {}), 4)
        state = {f"module.{k.replace('projector.layers.', 'projector.')}": v for k, v in encoder.state_dict().items()}
        files[model] = str(tmp_path / f"vicreg_{model}.pth")
        torch.save({"epoch": 1000, "model": state, "optimizer": {"state": {}}}, files[model])
    ctx = _run("ssl-dejavu-imagenet-vicreg.yaml", str(tmp_path / "runs"), [
        f"data.path={tmp_path / 'imagenet' / 'images'}", f"data.voc.annotations={tmp_path / 'imagenet' / 'Annotation'}",
        "data.image_size=32", f"splits.assignments={_partition(ids, str(tmp_path / 'splits.parquet'))}",
        "model.backbone=small_cnn", "model.projector_dims=[32, 32, 16]", f"train.checkpoint={files['a']}",
        f"train.checkpoint_b={files['b']}", "search.k=20", *SMALL])
    report = storage.read_json(ctx.report_json)
    assert report["study"] == "ssl_dejavu" and report["protocol"]["name"] == "dejavu-2023"
    assert report["training"]["model_a"]["format"] == "state dict" and report["training"]["model_a"]["projector"]
    assert report["splits"]["assignments"]["listed"]["shared"] == len(ids[2::6])
    assert set(report["results"]) == {"backbone", "projector"} and "null" in report["results"]["projector"]


def test_the_published_vlm_config_on_a_tiny_stand_in(ray_local, tmp_path):
    import open_clip

    from study.train.clip import register_model_configs
    from test_text_encoders import encoder_folder

    objects = str(tmp_path / "objects.parquet")
    assert main(["data", "synth", "--format", "webdataset", "--num", "300", "--output", str(tmp_path / "laion"),
                 "--objects", objects, "--shard-size", "100", "--set", "data.image_size=32",
                 "--set", "data.objects_per_image=[2, 4]", "--set", "data.caption_objects=1"]) == 0
    ids = sorted(pq.read_table(objects).column("key").to_pylist())
    register_model_configs()
    files = {}
    for i, model in enumerate(("a", "b")):  # open_clip_train's epoch file under DDP
        torch.manual_seed(i)
        net = open_clip.create_model("dejavu-tiny", force_image_size=32)
        files[model] = str(tmp_path / f"model-{model}-epoch_32.pt")
        torch.save({"epoch": 32, "name": f"model-{model}", "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
                   files[model])
    ctx = _run("vlm-dejavu-laion-vit-b-32.yaml", str(tmp_path / "runs"), [
        f"data.path={tmp_path / 'laion'}", f"data.objects={objects}", "data.image_size=32",
        f"splits.assignments={_partition(ids, str(tmp_path / 'splits.parquet'))}", "model.clip=dejavu-tiny",
        f"train.checkpoint={files['a']}", f"train.checkpoint_b={files['b']}", "search.index=flat",
        f"measure.text_model={encoder_folder(tmp_path / 'text-encoder')}", *SMALL])
    report = storage.read_json(ctx.report_json)
    assert report["study"] == "vlm_dejavu" and report["protocol"]["name"] == "vlm-dejavu-2024"
    assert [report["training"][m]["format"] for m in ("model_a", "model_b")] == ["open_clip_train"] * 2
    assert "text_model" in report["one_model"]["predictors"]
    assert not [d for d in report["protocol"]["deviations"] if d["choice"] == "one-model test"]  # the text model given


@pytest.fixture
def cifar_stand_in(tmp_path) -> str:
    import datasets

    from study.data.photos import PHOTOS, photo

    def png(i: int) -> bytes:  # a different 64-pixel window of a photograph for each image
        image = photo(i % len(PHOTOS))
        y, x = (i * 37) % (image.shape[0] - 64), (i * 53) % (image.shape[1] - 64)
        out = io.BytesIO()
        Image.fromarray(image[y:y + 64, x:x + 64]).convert("RGB").resize((32, 32)).save(out, format="PNG")
        return out.getvalue()

    n = 220
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": png(i), "path": None} for i in range(n)], "label": [i % 5 for i in range(n)]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=5)}))
    ds.save_to_disk(str(tmp_path / "cifar10"))
    return str(tmp_path / "cifar10")


def test_the_published_sslmem_config_on_a_tiny_stand_in(ray_local, tmp_path, cifar_stand_in):
    ctx = _run("sslmem-cifar10-simclr.yaml", str(tmp_path / "runs"), [
        f"data.path={cifar_stand_in}", "model.backbone=small_cnn", "model.projector_dims=[32, 16]", "train.epochs=1",
        "train.checkpoint_every=1", "train.global_batch_size=40", "sslmem.views=2", *SMALL])
    report = storage.read_json(ctx.report_json)
    assert report["study"] == "sslmem" and report["protocol"]["name"] == "sslmem-2024"
    counts = report["splits"]["counts"]
    assert counts["shared"] > 4 * counts["target"] > 0 and counts["reference"] > 0 and counts["holdout"] > 0
