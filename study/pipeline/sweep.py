"""Sweeps: one study, one split plan and public set, a model pair per setting (DESIGN §2.2).

``sweep: {train.text_randomization.p: [0, 0.1, 0.3, 0.5]}`` runs the stages after ``splits`` once
per value, each setting in ``settings/<name>/`` with its own config; finished settings are reused
on rerun like any stage. Only sections that do not change the records or their split plan may be
swept.
"""
from __future__ import annotations

from study.config import StudyConfig
from study.config_load import build, config_to_dict
from study.errors import ConfigError

SWEEPABLE = ("model.", "train.", "embed.", "search.", "measure.")


def setting_name(key: str, value) -> str:
    """Directory-safe name of one setting, e.g. ``p=0.1`` for train.text_randomization.p = 0.1."""
    text = str(value).replace("/", "_").replace(" ", "")
    return f"{key.rsplit('.', 1)[-1]}={text}"


def settings_of(cfg: StudyConfig) -> list[tuple[str, StudyConfig]]:
    """(setting name, resolved config) per setting; ``[("", cfg)]`` without a sweep."""
    if not cfg.sweep:
        return [("", cfg)]
    if len(cfg.sweep) != 1:
        raise ConfigError(f"sweep: give exactly one key to sweep, got {sorted(cfg.sweep)}")
    (key, values), = cfg.sweep.items()
    if not key.startswith(SWEEPABLE):
        raise ConfigError(f"sweep: '{key}' cannot be swept; choose a key under {', '.join(s[:-1] for s in SWEEPABLE)}")
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
    base = config_to_dict(cfg)
    base["sweep"] = {}
    out, seen = [], set()
    for value in values:
        raw = _with(base, key, value)
        name = setting_name(key, value)
        if name in seen:
            raise ConfigError(f"sweep.{key}: value {value!r} is listed twice")
        seen.add(name)
        out.append((name, build(StudyConfig, raw, "")))  # a bad value fails here, naming its key
    return out


def _with(raw: dict, key: str, value) -> dict:
    import copy

    raw = copy.deepcopy(raw)
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"sweep: unknown config key '{key}'")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"sweep: unknown config key '{key}'")
    node[parts[-1]] = value
    return raw
