"""A model trained elsewhere, imported as model A (train.checkpoint): the accepted forms, and
clear errors for the rest."""
from __future__ import annotations

import io

import pytest
import torch

from study.config import ModelConfig
from study.errors import ConfigError, DataError
from study.train.checkpoints import check_spaces, import_checkpoint
from study.train.methods import method_params
from study.train.models import build_encoder, load_model, save_model
from test_object_storage import BUCKET, s3_env  # noqa: F401  (s3_env: the local S3 server fixture)

CFG = ModelConfig(backbone="small_cnn", projector_dims=(16, 8))


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder(CFG, "simclr", method_params("simclr", {}), 4).eval()


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _import(data: bytes):
    return import_checkpoint(data, CFG, "simclr", {}, 4, 32, "file:///x.pt")


def _same(a, b, space: int) -> None:
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(a(x)[space], b(x)[space])


def test_a_file_this_product_saved_is_taken_as_it_is():
    data = save_model(_encoder(), {"method": "simclr", "params": {}, "model": {"backbone": "small_cnn",
                                   "projector_dims": [16, 8]}, "num_classes": 4, "image_size": 32})
    got, info = _import(data)
    assert got == data and info["format"] == "dejavu-study" and info["projector"]


def test_an_encoders_state_dict_under_a_key_and_with_ddps_prefix():
    enc = _encoder(1)
    got, info = _import(_bytes({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}, "epoch": 9}))
    again, meta = load_model(got)
    assert info["projector"] and meta["checkpoint"] == "file:///x.pt" and meta["trained_on"] == ["elsewhere"]
    _same(enc, again, 0)
    _same(enc, again, 1)


def test_a_bare_backbone_measures_the_backbone_only():
    enc = _encoder(2)
    state = {**enc.backbone.state_dict(), "fc.weight": torch.zeros(3, 256), "fc.bias": torch.zeros(3)}  # a classifier's head
    got, info = _import(_bytes(state))
    assert not info["projector"]
    _same(enc, load_model(got)[0], 0)
    check_spaces(info, ("backbone",))
    with pytest.raises(ConfigError, match=r"^search\.representations: .*no projector weights"):
        check_spaces(info, ("backbone", "projector"))


def test_another_architecture_or_not_a_checkpoint_is_a_clear_error():
    other = build_encoder(ModelConfig(backbone="resnet18", projector_dims=(16, 8)), "simclr", method_params("simclr", {}), 4)
    with pytest.raises(DataError, match=r"does not hold a small_cnn backbone: \d+ weight\(s\) missing"):
        _import(_bytes(other.state_dict()))
    with pytest.raises(DataError, match="is not a PyTorch checkpoint that loads as weights only"):
        _import(b"not a checkpoint at all")
    with pytest.raises(DataError, match="not a state dict"):
        _import(_bytes({"epoch": 3}))


def test_a_checkpoint_on_object_storage_is_read_and_fingerprinted(s3_env):
    from study import storage
    from study.config_load import load_config
    from study.frame.runner import _checkpoint_file

    enc = _encoder(3)
    uri = f"s3://{BUCKET}/models/elsewhere.pt"
    storage.write_bytes(uri, _bytes({"state_dict": enc.state_dict()}))
    size, _ = _checkpoint_file(load_config(None, [f"train.checkpoint={uri}"]))
    assert size == len(storage.read_bytes(uri))  # part of the train stage's hash
    got, info = import_checkpoint(storage.read_bytes(uri), CFG, "simclr", {}, 4, 32, uri)
    assert info["projector"] and load_model(got)[1]["checkpoint"] == uri
    _same(enc, load_model(got)[0], 1)
    assert _checkpoint_file(load_config(None, [f"train.checkpoint=s3://{BUCKET}/models/missing.pt"])) is None
