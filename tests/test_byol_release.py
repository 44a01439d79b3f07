"""The official BYOL release read as an SSL encoder. The network is built here with Haiku as BYOL's
code builds it (its ``ResNetTorso`` for ResNet-50: a SAME-padded 7x7 stride-2 conv and max-pool,
Haiku's own ResNet block groups, named ``res_net50``; its MLP projector and predictor; a
classifier), its BatchNorm statistics moved by training steps, and saved as BYOL's checkpointer
saves it: dill, protocol 2, ``{'experiment_state': a named tuple of BYOL's module, 'step', 'rng'}``.
What the product embeds equals Haiku's forward pass in evaluation, on the same pixels, at an even
and an odd image size (SAME pads differently on each)."""
from __future__ import annotations

import io
import os
import pickle
import sys
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import dill
import numpy as np
import pytest
import torch

from study.config import ModelConfig
from study.errors import ConfigError, DataError
from study.train.checkpoints import import_checkpoint
from study.train.models import BACKBONES, input_scaling, load_model

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import haiku as hk  # noqa: E402  (the test extra's: the network BYOL's code builds)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

BN = {"decay_rate": 0.9, "eps": 1e-5, "create_scale": True, "create_offset": True}  # BYOL's bn_config
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # BYOL's dataset.normalize_images
PROJ, OUT, PRED = 64, 16, 32


class _ByolExperimentState(NamedTuple):  # as byol.byol_experiment defines it
    online_params: Any
    target_params: Any
    online_state: Any
    target_state: Any
    opt_state: Any


class LarsState(NamedTuple):  # byol.utils.optimizers' optimiser state (a stand-in of the same shape)
    count: Any
    momentum: Any


_ByolExperimentState.__module__ = "byol.byol_experiment"
LarsState.__module__ = "byol.utils.optimizers"


class ResNet50(hk.Module):
    """BYOL's networks.ResNetTorso with ResNet-50's groups (v1, width 1): its modules built in
    ``__init__``, as there (Haiku names them ``res_net50/~/...``)."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.initial_conv = hk.Conv2D(64, 7, stride=2, with_bias=False, padding="SAME", name="initial_conv")
        self.initial_batchnorm = hk.BatchNorm(name="initial_batchnorm", **BN)
        self.block_groups = [hk.nets.ResNet.BlockGroup(channels, blocks, stride, BN, False, True, True,
                                                       name=f"block_group_{i}")
                             for i, (channels, blocks, stride) in enumerate(zip((256, 512, 1024, 2048), (3, 4, 6, 3),
                                                                                 (1, 2, 2, 2)))]

    def __call__(self, x, is_training):
        x = jax.nn.relu(self.initial_batchnorm(self.initial_conv(x), is_training))
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for group in self.block_groups:
            x = group(x, is_training, False)
        return jnp.mean(x, axis=(1, 2))


def mlp(name, hidden, out):
    """BYOL's networks.MLP."""

    def apply(x, is_training):
        x = hk.Linear(hidden, with_bias=True)(x)
        x = jax.nn.relu(hk.BatchNorm(**BN)(x, is_training))
        return hk.Linear(out, with_bias=False)(x)

    return hk.to_module(apply)(name=name)


def _forward(images, is_training):
    images = (images - jnp.array(MEAN)) / jnp.array(STD)
    h = ResNet50(name="res_net50")(images, is_training)
    z = mlp("projector", PROJ, OUT)(h, is_training)
    mlp("predictor", PRED, OUT)(z, is_training)
    hk.Linear(10, name="classifier")(jax.lax.stop_gradient(h))
    return h, z


NET = hk.without_apply_rng(hk.transform_with_state(_forward))
APPLY = jax.jit(NET.apply, static_argnums=3)  # compiled: ~3x faster here than op by op


def _pixels(size: int, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _haiku(pixels: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(pixels.transpose(0, 2, 3, 1).astype(np.float32) / 255.0)


def _trained(seed: int):
    """Random parameters of the network's shapes (Haiku's own initialisation would start a block's
    last BatchNorm scale at zero: every scale and offset is moved off it here) and BatchNorm
    statistics from a training step on them. The shapes come from tracing the network's
    initialisation (``jax.eval_shape``), which runs nothing: a few times faster than running it."""
    shapes, state = jax.eval_shape(lambda key, x: NET.init(key, x, True), jax.random.PRNGKey(seed),
                                   _haiku(_pixels(32, 4, seed)))
    rng = np.random.default_rng(seed)
    fill = {"w": lambda v: rng.normal(0, np.sqrt(2 / np.prod(v.shape[:-1])), v.shape),  # He: fan-in = all but out
            "b": lambda v: rng.normal(0, 0.1, v.shape), "offset": lambda v: rng.normal(0, 0.1, v.shape),
            "scale": lambda v: 1 + rng.normal(0, 0.1, v.shape)}
    params = {m: {k: fill[k](v).astype(np.float32) for k, v in leaves.items()} for m, leaves in shapes.items()}
    state = jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), state)
    _, state = APPLY(params, state, _haiku(_pixels(32, 8, seed + 10)), True)
    return params, jax.device_get(state)


@pytest.fixture(scope="module")
def release():
    online = _trained(1)
    target = ({m: {k: v * 1.5 for k, v in leaves.items()} for m, leaves in online[0].items()},  # another network
              {m: {k: v * 2 for k, v in leaves.items()} for m, leaves in online[1].items()})
    blob = {"experiment_state": _ByolExperimentState(online[0], target[0], online[1], target[1],
                                                     LarsState(np.int32(5), {k: dict(v) for k, v in online[0].items()})),
            "step": 5, "rng": jax.random.PRNGKey(3)}
    buf = io.BytesIO()
    dill.dump(blob, buf, protocol=2)  # byol.utils.checkpointing.Checkpointer.maybe_save_checkpoint
    return buf.getvalue(), online


def _import(data: bytes, size: int, backbone: str = "resnet50-haiku", fmt: str = "auto"):
    cfg = ModelConfig(backbone=backbone, projector_dims=(PROJ, OUT))
    return import_checkpoint(data, cfg, "byol", {}, 10, size, "file:///pretrain.pkl", fmt=fmt)


def _off(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("size", [32, 37])
def test_embeddings_equal_haikus_forward_in_evaluation(release, size):
    data, (params, state) = release
    model, info = _import(data, size)
    assert (info["format"], info["projector"]) == ("byol", True)
    encoder, meta = load_model(model)
    pixels = _pixels(size, seed=size)
    with torch.inference_mode():
        h, z = encoder(input_scaling(meta)(torch.from_numpy(pixels)))
    want_h, want_z = (torch.tensor(np.asarray(v)) for v in APPLY(params, state, _haiku(pixels), False)[0])
    # Fifty float32 layers in two libraries: equal to rounding (measured ~4e-5 of the norm).
    assert _off(h, want_h) < 2e-4 and _off(z, want_z) < 2e-4
    # The same weights under torchvision's symmetric padding are another function of the pixels.
    tv, _ = BACKBONES["resnet50-imagenet"]()
    tv.load_state_dict({k[len("backbone."):]: v for k, v in encoder.state_dict().items() if k.startswith("backbone.")})
    with torch.inference_mode():
        other = tv.eval()(input_scaling(meta)(torch.from_numpy(pixels)))
    assert _off(other, want_h) > 0.05


def test_named_format_and_backbone(release):
    data, _ = release
    assert _import(data, 32, fmt="byol")[1]["format"] == "byol"
    with pytest.raises(ConfigError, match=r"set model.backbone: resnet50-haiku, not resnet50-imagenet"):
        _import(data, 32, backbone="resnet50-imagenet")
    other = io.BytesIO()
    pickle.dump({"weights": np.zeros(3)}, other, protocol=2)
    with pytest.raises(DataError, match=r"is not the official BYOL release"):
        _import(other.getvalue(), 32, fmt="byol")


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_pickle_naming_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"experiment_state": _Payload(marker)}, protocol=2)
    with pytest.raises(DataError, match=r"names posix.system, which is not read from a file"):
        _import(data, 32, fmt="byol")
    with pytest.raises(DataError, match=r"not a PyTorch checkpoint that loads as weights only"):
        _import(data, 32)  # auto: neither the BYOL release nor torch's weights-only load runs it
    assert not marker.exists()


class frozendict(Mapping):  # noqa: N801  Haiku's parameter container of 2020 (dm-haiku 0.0.2), as it pickles
    def __init__(self, *args, **kwargs):
        self._storage = dict(*args, **kwargs)

    def __getitem__(self, key):
        return self._storage[key]

    def __iter__(self):
        return iter(self._storage)

    def __len__(self):
        return len(self._storage)

    def __reduce__(self):
        return frozendict, (self._storage,)


def test_parameters_in_haikus_frozendicts_of_2020_read_the_same(release, monkeypatch):
    """The release predates Haiku's plain-dict parameters: its containers were frozendicts, pickled
    by reference to Haiku's module (recorded here, never imported); and a copy saved again with
    pickle's protocol 5 reads the same."""
    import haiku._src.data_structures as structures

    frozendict.__module__ = structures.__name__
    monkeypatch.setattr(structures, "frozendict", frozendict, raising=False)  # where pickle finds it by name
    data, (params, state) = release
    freeze = lambda tree: frozendict({m: frozendict(v) for m, v in tree.items()})  # noqa: E731
    blob = {"experiment_state": _ByolExperimentState(freeze(params), freeze(params), freeze(state), freeze(state), None),
            "step": 5, "rng": np.zeros(2, np.uint32)}
    old = io.BytesIO()
    dill.dump(blob, old, protocol=2)
    assert b"haiku._src.data_structures" in old.getvalue()
    # Saved again with plain pickle's newest protocol: numpy's arrays then rebuild from their bytes,
    # and the experiment state's class is named by reference to BYOL's module (importable here only).
    byol = types.ModuleType("byol.byol_experiment")
    byol._ByolExperimentState = _ByolExperimentState
    monkeypatch.setitem(sys.modules, "byol", types.ModuleType("byol"))
    monkeypatch.setitem(sys.modules, "byol.byol_experiment", byol)
    again = pickle.dumps(blob, protocol=5)
    assert b"_frombuffer" in again
    want = load_model(_import(data, 32)[0])[0].state_dict()
    for other in (old.getvalue(), again):
        got = load_model(_import(other, 32)[0])[0].state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
