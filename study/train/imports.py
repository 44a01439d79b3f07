"""Models trained elsewhere: which config key names each model's file, and the importer of each
training recipe (an SSL encoder's state dict, an open_clip checkpoint). An importer reads a local
copy of the file (``study.model_cache``: a remote one is copied once per machine) and returns this
product's saved form, so that the later stages load an imported model as they load a trained one.
"""
from __future__ import annotations

from typing import Callable

from study.config import StudyConfig
from study.errors import ConfigError

KEYS = {"model_a": "train.checkpoint", "model_b": "train.checkpoint_b"}


def checkpoint_of(cfg: StudyConfig, model: str) -> str:
    """The file a model is imported from ('' when the study trains it)."""
    return {"model_a": cfg.train.checkpoint, "model_b": cfg.train.checkpoint_b}.get(model, "")


def _ssl(cfg: StudyConfig, path: str, key: str, uri: str, num_classes: int) -> tuple[bytes, dict]:
    from study.train.checkpoints import import_checkpoint

    with open(path, "rb") as fh:
        data = fh.read()
    return import_checkpoint(data, cfg.model, cfg.train.method, cfg.train.params, num_classes, cfg.data.image_size,
                             uri, key, cfg.train.checkpoint_format)


def _clip(cfg: StudyConfig, path: str, key: str, uri: str, num_classes: int) -> tuple[bytes, dict]:
    from study.train.clip_import import import_clip

    return import_clip(path, key, uri, cfg.model.clip, cfg.data.image_size, cfg.model.image_mean, cfg.model.image_std,
                       cfg.train.checkpoint_format)


IMPORTERS: dict[str, Callable[..., tuple[bytes, dict]]] = {"ssl": _ssl, "clip": _clip}


def import_model(cfg: StudyConfig, recipe: str, model: str, num_classes: int) -> tuple[bytes, dict]:
    """(this product's model file, what was imported, with the file's fingerprint) of ``model``."""
    from study import model_cache

    key, uri = KEYS[model], checkpoint_of(cfg, model)
    if recipe not in IMPORTERS:
        raise ConfigError(f"{key}: models of the '{recipe}' recipe cannot be imported")
    path = model_cache.local_path(uri, key)
    data, info = IMPORTERS[recipe](cfg, path, key, uri, num_classes)
    return data, {**info, "fingerprint": model_cache.fingerprint(uri, key)}


def file_identities(cfg: StudyConfig) -> list | None:
    """Each imported model's key and fingerprint (hashed into the train stage's marker: new contents
    import again, the same contents, even rewritten, are reused); None when nothing is imported. A
    missing file counts as none here: the stage's checks say so."""
    from study import model_cache

    out = []
    for model, key in KEYS.items():
        uri = checkpoint_of(cfg, model)
        try:
            if uri:
                out.append((key, model_cache.fingerprint(uri, key)))
        except ConfigError:  # nothing there
            pass
    return out or None


def check_imports(cfg: StudyConfig, kind: str) -> None:
    """Config checks of a study with imported models (before any stage runs)."""
    from study import storage

    t = cfg.train
    for model, key in KEYS.items():
        uri = checkpoint_of(cfg, model)
        if uri and not storage.exists(uri):
            raise ConfigError(f"{key}: {uri} does not exist")
    if not (t.checkpoint or t.checkpoint_b):
        return
    if t.checkpoint_b and not t.pair:
        raise ConfigError("train.checkpoint_b: model B is the reference; train.pair: false has none")
    if t.snapshot:
        raise ConfigError("train.snapshot: a model from train.checkpoint has no snapshots; leave it at 0")
    if kind == "vlm_dejavu" and t.text_randomization.p > 0 and t.checkpoint and (t.checkpoint_b or not t.pair):
        raise ConfigError("train.text_randomization: randomizes the captions of models this product trains; "
                          "every model of this study is imported")
