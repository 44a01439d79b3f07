"""YAML and ``--set key=value`` into a checked StudyConfig, and back to plain data for saving.

Every problem (unknown key, wrong type, bad value, unreadable file) becomes a ConfigError naming
the dotted key, so the command line can print it as one line.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, Mapping

import re

import yaml

from study.config import StudyConfig
from study.config.checks import ADDED  # noqa: F401  (the field metadata config_hash reads)
from study.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; configs mean the number (learning rates)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_config(path: str | None, overrides: list[str] = (), output: str | None = None) -> StudyConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, check it all."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
    sets = [_parse_override(item) for item in overrides]
    for key, value in sets:
        _seed_mapping_default(raw, key)
        _set_dotted(raw, key, value)
    if output is not None:
        raw["output"] = output
    from study.config.protocols import apply

    # A protocol applies under the values set where it is set or later: in a file, under the file's
    # own; from --set, over the file's and under the other --set values.
    if any(key == "protocol" for key, _ in sets):
        raw = apply(raw, replace=True)
        for key, value in sets:
            _set_dotted(raw, key, value)
        return build(StudyConfig, raw, "")
    return build(StudyConfig, apply(raw), "")


def _hashed(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        out = {}
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if f.metadata.get("added") and value == (f.default if f.default is not dataclasses.MISSING
                                                     else f.default_factory()):
                continue
            out[f.name] = _hashed(value)
        return out
    if isinstance(cfg, Mapping):
        return {str(k): _hashed(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_hashed(v) for v in cfg]
    return cfg


def config_to_dict(cfg: Any) -> Any:
    """Plain JSON-able data (tuples become lists) for saving beside a run."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections and upstream hashes (stage markers, run ids). A key
    added to a section after runs existed (``ADDED``) counts only when it differs from its default,
    so the runs of configs that do not set it keep their ids and finished stages."""
    blob = json.dumps([_hashed(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.load(text, Loader=_Loader) if text else ""
    except yaml.YAMLError as exc:
        # Falling back to the raw text would turn a mistyped list or mapping into a string that
        # only fails later, or never (a path); plain words and paths parse as YAML strings.
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{key}: --set value {text!r} is not valid YAML ({problem}); "
                          "put it in quotes to pass it as a string") from None
    return key, value


def _seed_mapping_default(raw: dict[str, Any], key: str) -> None:
    """``--set splits.fractions.target=0.2`` changes one entry of a mapping field: start from the
    field's default mapping when the config file did not give one."""
    cls, node = StudyConfig, raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return
        f = fields[part]
        tp = typing.get_type_hints(cls)[part]
        if typing.get_origin(tp) in (collections.abc.Mapping, dict) and i == len(parts) - 2:
            if part not in node and f.default_factory is not dataclasses.MISSING:
                node[part] = dict(f.default_factory())
            return
        if not dataclasses.is_dataclass(tp):
            return
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        cls = tp


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Construct dataclass ``cls`` from a mapping, checking keys and types recursively."""
    where = prefix or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
            raise ConfigError(f"unknown config key '{_join(prefix, key)}'{hint}")
    kwargs = {key: _coerce(hints[key], value, _join(prefix, key)) for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field missing: only possible for hand-built classes
        raise ConfigError(f"{where}: {exc}") from None


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _sizes(spec: str, key: str) -> list[int]:
    parts = spec.split("-")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{key}: expected sizes like 8192-8192-8192 (positive integers joined by '-'), got {spec!r}")
    return [int(p) for p in parts]


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is tuple:
        if isinstance(value, str) and args == (int, Ellipsis):  # sizes as the papers write them: 8192-8192-8192
            value = _sizes(value, key)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (collections.abc.Mapping, dict) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")
