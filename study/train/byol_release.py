"""The official BYOL release (DeepMind's JAX/Haiku code, ``pretrain_res50x1.pkl``) as an SSL
encoder in this product's names (``train.checkpoint_format: byol``; ``model.backbone:
resnet50-haiku``).

The file is a dill pickle of ``{'experiment_state': (online_params, target_params, online_state,
target_state, opt_state), 'step', 'rng'}``: the experiment state a named tuple of BYOL's code, the
parameters and BatchNorm statistics Haiku dicts of numpy arrays. Unpickling it as pickle does would
import and call whatever the file names, so this reader resolves only numpy's array rebuilding and
dill's named-tuple and array helpers (re-done here), and puts a recorder, never imported and never
run, in place of anything JAX, Haiku, optax or BYOL's own code names (the optimiser's state, the
random key). Anything else is refused. No library reads a Haiku checkpoint into PyTorch; hence this.

The online network is read, as BYOL's linear evaluation reads it: ``<encoder>/~/initial_conv`` ->
``conv1``, ``block_group_G/~/block_B/~/conv_I`` -> ``layer{G+1}.B.conv{I+1}`` (``batchnorm_I``,
``shortcut_conv`` / ``shortcut_batchnorm`` alike), ``projector/linear``, ``batch_norm``,
``linear_1`` -> the projector's layers 0, 1, 3; convolutions HWIO -> OIHW, Linear (in, out) -> (out,
in), BatchNorm's ``scale`` / ``offset`` and its moving averages (``mean_ema`` / ``var_ema``) ->
``weight`` / ``bias`` / ``running_mean`` / ``running_var``. The predictor and classifier are left out.
"""
from __future__ import annotations

import _codecs
import builtins
import collections
import copyreg
import io
import pickle
import re

import numpy as np
import torch

STAND_IN = ("byol", "haiku", "optax", "jax", "jaxlib", "chex", "tree", "acme")
FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")


class Refused(Exception):
    """The file names something this reader does not resolve."""


class _Recorded:
    """Stands in for a class or function the file names: keeps what it was given, runs nothing."""

    args: tuple = ()
    state = None

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


def _named_tuple(name, fieldnames, modulename=None, defaults=None, *rest):
    # dill's _create_namedtuple imports the module it names; a plain named tuple of the same fields here.
    return collections.namedtuple(str(name).rsplit(".", 1)[-1], list(fieldnames), rename=True)


def _array(f, args, state, npdict=None, *rest):
    # dill's _create_array: an array rebuilt by numpy's own function, then its state set.
    if f is not np.ndarray and getattr(f, "__name__", "") != "_reconstruct":
        raise Refused("an array built by another function")
    array = f(*args)
    array.__setstate__(state)
    return array


RESOLVED = {
    ("dill._dill", "_create_namedtuple"): _named_tuple,
    ("dill._dill", "_create_array"): _array,
    ("_codecs", "encode"): _codecs.encode,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", n): getattr(builtins, n) for n in ("object", "set", "frozenset", "complex", "bytearray", "slice")},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy"):
            if name in ("_reconstruct", "scalar"):
                return getattr(np._core.multiarray, name)
            if name in ("ndarray", "dtype"):
                return getattr(np, name)
        if (module, name) in (("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")):
            return np._core.numeric._frombuffer  # an array under pickle protocol 5 (a file saved again since)
        if (module, name) in RESOLVED:
            return RESOLVED[(module, name)]
        if module.split(".")[0] in STAND_IN:
            return type(name, (_Recorded,), {"__module__": "stand-in." + module})
        raise Refused(f"{module}.{name}")


def _mapping(obj) -> dict | None:
    """A Haiku container (a dict, or a recorded frozendict/FlatMapping: its dict) as a dict."""
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, _Recorded):
        for part in (*obj.args, obj.state, *(obj.state if isinstance(obj.state, tuple) else ())):
            if isinstance(part, dict):  # the mapping, or the instance's attributes holding it
                return next((part[k] for k in ("_storage", "_mapping", "_dict") if isinstance(part.get(k), dict)), part)
    return None


def _experiment(blob) -> tuple[dict, dict] | None:
    """(online params, online state) of a loaded BYOL checkpoint, or None when it is not one."""
    state = blob.get("experiment_state") if isinstance(blob, dict) else None
    fields = getattr(state, "_fields", None)
    if fields and "online_params" in fields:
        params, stats = state.online_params, state.online_state
    elif isinstance(state, _Recorded) and len(state.args) == len(FIELDS):
        params, stats = state.args[0], state.args[2]
    else:
        return None
    params, stats = _mapping(params), _mapping(stats)
    return (params, stats) if params is not None and stats is not None else None


BLOCK = re.compile(r"^block_group_(\d+)/block_(\d+)/(conv|batchnorm)_(\d+)$")
SHORTCUT = re.compile(r"^block_group_(\d+)/block_(\d+)/(shortcut_conv|shortcut_batchnorm)$")
DOWNSAMPLE = {"shortcut_conv": "downsample.0", "shortcut_batchnorm": "downsample.1"}
PROJECTOR = {"projector/linear": "projector.layers.0", "projector/batch_norm": "projector.layers.1",
             "projector/linear_1": "projector.layers.3"}


def _module(path: str, encoder: str) -> str | None:
    """This product's module name of a Haiku module path (None: left out). Haiku writes ``/~/``
    before a module its parent built in ``__init__`` and ``/`` before one built in ``__call__``
    (BYOL's MLP builds its layers there); both are read as ``/``."""
    path = path.replace("/~/", "/")
    if path in PROJECTOR:
        return PROJECTOR[path]
    if not path.startswith(encoder + "/"):
        return None
    rel = path[len(encoder) + 1:]
    if rel in ("initial_conv", "initial_batchnorm"):
        return "backbone." + {"initial_conv": "conv1", "initial_batchnorm": "bn1"}[rel]
    m = BLOCK.match(rel)
    if m:
        g, b, kind, i = m.groups()
        return f"backbone.layer{int(g) + 1}.{b}.{'conv' if kind == 'conv' else 'bn'}{int(i) + 1}"
    m = SHORTCUT.match(rel)
    return f"backbone.layer{int(m.group(1)) + 1}.{m.group(2)}.{DOWNSAMPLE[m.group(3)]}" if m else None


def _tensor(name: str, value) -> torch.Tensor:
    a = np.asarray(value, dtype=np.float32)
    if name == "w":
        a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T  # HWIO -> OIHW; (in, out) -> (out, in)
    else:
        a = a.reshape(-1)  # BatchNorm's (1, 1, 1, C) / (1, C); a bias
    return torch.from_numpy(np.array(a, order="C"))  # a copy: arrays rebuilt from a file's bytes are read-only


def encoder_state(data: bytes) -> dict | None:
    """The encoder's state dict (this product's names) of a BYOL release's bytes; None when the file
    is a pickle of something else. Raises ``Refused`` naming what the file holds that is not read."""
    try:
        blob = _Unpickler(io.BytesIO(data)).load()
    except Refused:
        raise
    except Exception:
        return None
    found = _experiment(blob)
    if found is None:
        return None
    params, stats = found
    encoders = [p.rsplit("/", 1)[0].removesuffix("/~") for p in params if p.endswith("/initial_conv")]
    if len(encoders) != 1:
        return None
    out = {}
    names = {"w": "weight", "b": "bias", "scale": "weight", "offset": "bias"}
    for path, leaves in params.items():
        module = _module(path, encoders[0])
        for leaf, value in (_mapping(leaves) or {}).items() if module else ():
            out[f"{module}.{names.get(leaf, leaf)}"] = _tensor(leaf, value)
    for path, leaves in stats.items():
        m = re.match(r"^(.*)/(mean|var)_ema$", path.replace("/~/", "/"))
        module, ema = (_module(m.group(1), encoders[0]) if m else None), _mapping(leaves) or {}
        if module and "average" in ema:  # what Haiku's BatchNorm normalises with in evaluation
            out[f"{module}.running_{m.group(2)}"] = _tensor("average", ema["average"])
    return out
