"""CLIP models trained elsewhere, imported as model A or B of a VLM study: each open_clip format a
user has (open_clip_train's epoch_N.pt under DDP, a Hugging Face Hub-style folder with its own
config and preprocessing, weights alone with a model name, fp16 weights), saved here from small
random-weight open_clip models. What the product embeds from the imported file equals the same
weights run directly through open_clip on the same pixels and captions, normalised with
torchvision by the model's own mean and std; files that do not fit say so in one line."""
from __future__ import annotations

import json
import os

import fsspec
import numpy as np
import pytest
import torch
from torchvision.transforms import Normalize

from study import model_cache
from study.errors import ConfigError, DataError
from study.train.clip import encode_images, encode_texts, load_clip, register_model_configs, tokenize
from study.train.clip_import import import_clip

OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# An architecture no registry knows: only the folder's config describes it.
FOLDER_CFG = {"embed_dim": 48, "vision_cfg": {"image_size": 48, "layers": 2, "width": 48, "head_width": 24,
                                              "patch_size": 8, "mlp_ratio": 2.0},
              "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1}}
CAPTIONS = ["a dog next to a red ball", "two cats on a sofa", "a bicycle leaning on a wall"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEJAVU_CACHE", str(tmp_path / "cache"))


def _tiny(seed: int, size: int = 32):
    import open_clip

    register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model("dejavu-tiny", force_image_size=size).eval()


def _pixels(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _direct(model, tokenizer, size: int, mean, std):
    """The original open_clip model on the same pixels and captions, outside the product."""
    with torch.no_grad():
        x = Normalize(mean, std)(_pixels(size).float() / 255)
        return (model.encode_image(x, normalize=True).numpy(),
                model.encode_text(tokenizer(CAPTIONS), normalize=True).numpy())


def _imported(data: bytes, size: int):
    model, tokenizer, meta = load_clip(data)
    return (encode_images(model, _pixels(size)).numpy(), encode_texts(model, tokenize(tokenizer, CAPTIONS)).numpy(),
            meta)


def _close(got, want) -> None:
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def _import(path, model_clip="dejavu-tiny", size=32, mean=(), std=()):
    path = str(path)
    return import_clip(model_cache.local_path(path, "train.checkpoint"), "train.checkpoint", path, model_clip, size,
                       mean, std)


def test_an_open_clip_train_checkpoint_under_ddp_with_its_optimiser(tmp_path):
    import open_clip

    model = _tiny(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, 32, 32), open_clip.get_tokenizer("dejavu-tiny")(["a"]))[0].sum().backward()
    opt.step()  # moments in the optimiser's state, as a real checkpoint has
    opt.zero_grad()
    torch.save({"epoch": 3, "name": "2026_12_07-10_00_00-model_dejavu-tiny-lr_0.001-b_64-j_1-p_amp",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict()}, tmp_path / "epoch_3.pt")
    data, info = _import(tmp_path / "epoch_3.pt")
    assert (info["format"], info["clip"], info["saved_as"]) == ("open_clip_train", "dejavu-tiny", "float32")
    *got, meta = _imported(data, 32)
    assert meta["trained_on"] == ["elsewhere"] and meta["image_mean"] == list(OPENAI[0])  # open_clip's default
    _close(got, _direct(model, open_clip.get_tokenizer("dejavu-tiny"), 32, *OPENAI))
    # The input scaling the user states (model.image_mean/std) replaces the default.
    data, _ = _import(tmp_path / "epoch_3.pt", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    _close(_imported(data, 32)[:2], _direct(model, open_clip.get_tokenizer("dejavu-tiny"), 32, (0.5,) * 3, (0.25,) * 3))


@pytest.mark.parametrize("weights, dtype", [("open_clip_pytorch_model.bin", torch.float32),
                                            ("open_clip_model.safetensors", torch.float16)])
def test_a_hub_style_folder_with_its_own_config_and_preprocessing(tmp_path, weights, dtype):
    """A folder as open_clip's push_to_hub writes it, an architecture of its own, mean and std of
    its own; fp16 weights load into fp32 and equal the fp16 weights run in fp32 directly."""
    import open_clip

    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": FOLDER_CFG, "preprocess_cfg": {"mean": mean, "std": std, "interpolation": "bicubic"}}))
    torch.manual_seed(2)
    model = open_clip.CLIP(**FOLDER_CFG).eval()
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, folder / weights)
    else:
        torch.save(state, folder / weights)
    data, info = _import(folder, size=48)
    assert info["format"] == "open_clip folder" and info["saved_as"] == str(dtype).replace("torch.", "")
    reference = open_clip.create_model(f"local-dir:{folder}").eval()  # open_clip's own reading of the folder
    reference.float()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert tuple(reference.visual.preprocess_cfg["mean"]) == mean
    _close(_imported(data, 48)[:2], _direct(reference, tokenizer, 48, mean, std))
    # The same folder on an object store (any fsspec URI): copied once into the cache, the same model.
    fs = fsspec.filesystem("memory")
    for name in os.listdir(folder):
        fs.pipe(f"/models/hub/{name}", (folder / name).read_bytes())
    remote, _ = import_clip(model_cache.local_path("memory://models/hub", "train.checkpoint_b"), "train.checkpoint_b",
                            "memory://models/hub", "dejavu-tiny", 48, (), ())
    _close(_imported(remote, 48)[:2], _direct(reference, tokenizer, 48, mean, std))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_alone_with_the_model_name(tmp_path, suffix):
    import open_clip

    model = _tiny(3)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    data, info = _import(path)
    assert info["format"] == "state dict"
    _close(_imported(data, 32)[:2], _direct(model, open_clip.get_tokenizer("dejavu-tiny"), 32, *OPENAI))


def test_files_that_do_not_fit_are_one_line(tmp_path):
    model = _tiny(4)
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "epoch_1.pt")
    with pytest.raises(DataError, match=r"^train\.checkpoint: .*epoch_1\.pt does not fit open_clip's dejavu-tiny-vit "
                                        r"at 32 pixels: \d+ weight\(s\) missing \(e\.g\. .*\), \d+ unexpected"):
        _import(tmp_path / "epoch_1.pt", model_clip="dejavu-tiny-vit")
    with pytest.raises(DataError, match=r"at 16 pixels: 1 of another shape \(e\.g\. visual\.attnpool\.positional_embedding: "
                                        r"\(2, 512\) in the file, \(1, 512\) here\); .*set data\.image_size to the size "
                                        r"it was trained at$"):
        _import(tmp_path / "epoch_1.pt", size=16)
    with pytest.raises(DataError, match=r"is a 'open_clip_train' checkpoint, not 'open_clip folder' \(train\.checkpoint_format\)$"):
        path = str(tmp_path / "epoch_1.pt")
        import_clip(path, "train.checkpoint", path, "dejavu-tiny", 32, (), (), "open_clip folder")
    with pytest.raises(ConfigError, match=r"^model\.clip: unknown open_clip model 'ViT-Q-99'"):
        _import(tmp_path / "epoch_1.pt", model_clip="ViT-Q-99")
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(DataError, match=r"^train\.checkpoint: .*notes\.pt is not a PyTorch checkpoint"):
        _import(tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "nothing.pt")
    with pytest.raises(DataError, match=r"holds neither open_clip weights .* nor an open_clip_train checkpoint"):
        _import(tmp_path / "nothing.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "README.md").write_text("weights to come")
    with pytest.raises(DataError, match=r"^train\.checkpoint: the folder .* has no open_clip_config\.json"):
        _import(tmp_path / "folder")
    (tmp_path / "folder" / "open_clip_config.json").write_text(json.dumps({"model_cfg": FOLDER_CFG}))
    with pytest.raises(DataError, match=r"has no weights file"):
        _import(tmp_path / "folder", size=48)
    torch.save(model.state_dict(), tmp_path / "folder" / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"^data\.image_size: 32, but the model in train\.checkpoint .* takes 48-pixel "
                                          r"images; set data\.image_size=48$"):
        _import(tmp_path / "folder", size=32)
