"""Sweeps: one study, one split plan and public set, a model pair per setting.

``sweep: {train.text_randomization.p: [0, 0.1, 0.3, 0.5]}`` runs the stages after ``splits`` once
per value, each setting in ``settings/<name>/`` with its own config; finished settings are reused
on rerun like any stage. Only sections that do not change the records or their split plan may be
swept. ``repeats: R`` trains every setting R times, with ``train.seed`` + 0 .. R-1 (settings
``seed=3`` or ``p=0.1,seed=3``): the calibration runs (``study.core.calibration``).
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


def setting_points(sweep: dict, repeats: int, seed: int) -> list[tuple[str, object, int]]:
    """(setting name, swept value or None, train.seed) per setting, in run order; ``[("", None,
    seed)]`` without a sweep or repeats. Works on the raw config (``dejavu report list`` uses it)."""
    if not sweep and repeats == 1:
        return [("", None, seed)]
    if len(sweep) > 1:
        raise ConfigError(f"sweep: give exactly one key to sweep, got {sorted(sweep)}")
    key, values = next(iter(sweep.items())) if sweep else ("", [None])
    if sweep and not key.startswith(SWEEPABLE):
        raise ConfigError(f"sweep: '{key}' cannot be swept; choose a key under {', '.join(s[:-1] for s in SWEEPABLE)}")
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
    if repeats > 1 and key == "train.seed":
        raise ConfigError("sweep: train.seed cannot be swept with repeats > 1 (repeats set the seeds)")
    out = []
    for value in values:
        for r in range(repeats):
            names = ([setting_name(key, value)] if key else []) + ([f"seed={seed + r}"] if repeats > 1 else [])
            out.append((",".join(names), value, seed + r))
    return out


def settings_of(cfg: StudyConfig) -> list[tuple[str, StudyConfig]]:
    """(setting name, resolved config) per setting; ``[("", cfg)]`` without a sweep or repeats."""
    points = setting_points(dict(cfg.sweep), cfg.repeats, cfg.train.seed)
    if points == [("", None, cfg.train.seed)]:
        return [("", cfg)]
    key = next(iter(cfg.sweep), "")
    base = config_to_dict(cfg)
    base["sweep"], base["repeats"] = {}, 1
    out, seen = [], set()
    for name, value, seed in points:
        raw = _with(base, key, value) if key else base
        if cfg.repeats > 1:
            raw = _with(raw, "train.seed", seed)
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
