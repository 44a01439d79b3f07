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
    check_spaces(info, ())  # no space named: the backbone's alone is measured
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


def test_a_checkpoint_on_object_storage_is_copied_once_and_fingerprinted(s3_env, tmp_path, monkeypatch):
    """A remote file is read into the machine's cache once (the import and every later look at it
    read the copy); its fingerprint is the sha256 of its bytes and goes into the train stage's
    hash; a new file at the same URI is a new copy and a new fingerprint."""
    import hashlib
    import os

    from study import model_cache, storage
    from study.config_load import load_config
    from study.train.imports import file_identities

    monkeypatch.setenv("DEJAVU_CACHE", str(tmp_path / "cache"))
    enc = _encoder(3)
    uri = f"s3://{BUCKET}/models/elsewhere.pt"
    storage.write_bytes(uri, _bytes({"state_dict": enc.state_dict()}))
    first = storage.read_bytes(uri)
    cfg = load_config(None, [f"train.checkpoint={uri}"])
    assert file_identities(cfg) == [("train.checkpoint", hashlib.sha256(first).hexdigest())]
    path = model_cache.local_path(uri, "train.checkpoint")
    assert path.startswith(str(tmp_path / "cache")) and open(path, "rb").read() == first
    os.chmod(path, 0o444)
    stamp = os.stat(path).st_mtime_ns
    assert model_cache.local_path(uri, "train.checkpoint") == path and os.stat(path).st_mtime_ns == stamp  # no new copy
    got, info = import_checkpoint(open(path, "rb").read(), CFG, "simclr", {}, 4, 32, uri)
    assert info["projector"] and load_model(got)[1]["checkpoint"] == uri
    _same(enc, load_model(got)[0], 1)
    storage.write_bytes(uri, _bytes({"state_dict": _encoder(4).state_dict()}))  # replaced at the same place
    second = storage.read_bytes(uri)
    assert file_identities(cfg) == [("train.checkpoint", hashlib.sha256(second).hexdigest())]
    assert open(model_cache.local_path(uri, "train.checkpoint"), "rb").read() == second
    assert file_identities(load_config(None, [f"train.checkpoint=s3://{BUCKET}/models/missing.pt"])) is None


def test_an_unreadable_remote_file_is_one_line(s3_env, tmp_path, monkeypatch):
    from study import model_cache

    monkeypatch.setenv("DEJAVU_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=rf"^train\.checkpoint_b: nothing at s3://{BUCKET}/models/none\.pt$"):
        model_cache.local_path(f"s3://{BUCKET}/models/none.pt", "train.checkpoint_b")
    with pytest.raises(ConfigError, match=r"^train\.checkpoint: nothing at s3://no-such-bucket-here/m\.pt$"):
        model_cache.local_path("s3://no-such-bucket-here/m.pt", "train.checkpoint")


def test_config_checks_of_imported_models(tmp_path):
    import os

    from study.config_load import load_config
    from study.frame.validate import check_registries

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    vlm = os.path.join(root, "configs", "quickstart-vlm.yaml")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for f in (a, b):
        torch.save(_encoder().state_dict(), f)
    check_registries(load_config(None, [f"train.checkpoint={a}", f"train.checkpoint_b={b}"]))
    cases = [
        (None, [f"train.checkpoint_b={tmp_path / 'none.pt'}"], r"^train\.checkpoint_b: .*none\.pt does not exist$"),
        (None, [f"train.checkpoint_b={b}", "train.pair=false"], r"^train\.checkpoint_b: model B is the reference"),
        (None, [f"train.checkpoint_b={b}", "train.epochs=4", "train.checkpoint_every=2", "train.snapshot=2"],
         r"^train\.snapshot: a model from train\.checkpoint has no snapshots"),
        (vlm, [f"train.checkpoint={a}", f"train.checkpoint_b={b}", "train.text_randomization.p=0.5"],
         r"^train\.text_randomization: .*every model of this study is imported"),
        (None, ["model.image_std=[0.2, 0, 0.2]"], r"^model\.image_std: must be three positive values"),
        (None, ["model.image_mean=[0.5]"], r"^model\.image_mean: must be three values"),
    ]
    for config, overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_registries(load_config(config, overrides))
    # One model imported, the other trained: text randomization still has a model to act on.
    check_registries(load_config(vlm, [f"train.checkpoint={a}", "train.text_randomization.p=0.5"]))
