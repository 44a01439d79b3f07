"""``protocol:``: presets that set each algorithmic choice of a study to the published one.

A protocol is a set of config values (dotted keys). ``protocol: dejavu-2023`` in a config file
applies its values under the file's own, so a config may still change single choices on top of
it; ``--set protocol=dejavu-2023`` applies them over the file's values and under the other
``--set`` values (the command line's choices are on top). ``default`` is
the product's own choices. Each study kind has one published protocol (``PUBLISHED``); the report
names the run's protocol and lists every choice whose value differs from the published one
(``deviations``), the published choices that need the user's own files (``NEEDS_FILES``: listed
while unset) and those no key can set (``FIXED``).

Values that depend on the data: the SSL crop's size threshold was 100 px at ImageNet's scale, where
images reach the model at 224 px; it is scaled to the run's model input (``data.image_size``):
``round(100 * image_size / 224)`` (14 px at 32 px).
"""
from __future__ import annotations

from typing import Any, Callable

PUBLISHED_CROP_PX, PUBLISHED_INPUT_PX = 100, 224


def _dejavu_2023(raw: dict) -> dict[str, Any]:
    from study.config.data import DataConfig

    size = int((raw.get("data") or {}).get("image_size", DataConfig().image_size))
    return {"embed.crop.rule": "strips", "embed.crop.min_side": round(PUBLISHED_CROP_PX * size / PUBLISHED_INPUT_PX),
            "data.resize": "imagenet_center_crop", "search.k": 100, "search.metric": "l2", "measure.top_q_size": "floor"}


def _vlm_dejavu_2024(raw: dict) -> dict[str, Any]:
    return {"measure.headline_rule": "union", "data.resize": "open_clip", "measure.top_q_size": "floor",
            "measure.sample_rankings": ["max_pred_gap", "crct_pred", "min_dist"], "measure.sample_sides": "target",
            "measure.sample_f": "from_means"}


def _sslmem_2024(raw: dict) -> dict[str, Any]:
    return {"sslmem.views": 5, "sslmem.range_normalised": True}


def _dejavu_oss_2024(raw: dict) -> dict[str, Any]:
    return {**_dejavu_2023(raw), "measure.one_model_naive_bayes": "published"}


PROTOCOLS: dict[str, Callable[[dict], dict[str, Any]]] = {
    "default": lambda raw: {}, "dejavu-2023": _dejavu_2023, "vlm-dejavu-2024": _vlm_dejavu_2024,
    "dejavu-oss-2024": _dejavu_oss_2024, "sslmem-2024": _sslmem_2024}

# The published protocol each study kind's report compares a run with.
PUBLISHED = {"ssl_dejavu": "dejavu-2023", "vlm_dejavu": "vlm-dejavu-2024", "sslmem": "sslmem-2024"}

# Published choices no config key sets yet: (choice, published, the product's).
_VOTE_TIES = ("label vote ties", "whichever label torch.topk returns first (arbitrary)",
              "the smallest label (kept: a stable rule)")
FIXED = {
    "dejavu-2023": [_VOTE_TIES],
    "dejavu-oss-2024": [_VOTE_TIES,
                        ("naive-Bayes ties", "the class its comparison of class names puts last",
                         "the lower label (kept: a stable rule)")],
}

# Published choices a preset cannot set because they name the user's own files: (key, choice,
# published, what a run without the key does). Listed as a deviation while the key is unset.
NEEDS_FILES = {
    "vlm-dejavu-2024": [
        ("measure.text_model", "one-model test",
         "a pretrained text model (measure.text_model) and the target's text tower search the public captions",
         "no pretrained text model: the text retriever (train.text_retriever, a CLIP trained on the public split) "
         "searches captions while the target searches public images, or no one-model test"),
    ],
}


def preset(name: str, raw: dict) -> dict[str, Any]:
    """The dotted config values of protocol ``name`` for the raw config ``raw``."""
    from study.errors import ConfigError

    if name not in PROTOCOLS:
        raise ConfigError(f"protocol: unknown value '{name}'; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](raw)


def compared_with(study: str, protocol: str) -> str | None:
    """The published protocol a run is compared with: its own, or its study kind's."""
    return protocol if protocol != "default" else PUBLISHED.get(study)


def deviations(study: str, protocol: str, config: dict) -> list[dict]:
    """Where a run (its resolved config, ``config_to_dict``'s shape) departs from the published
    protocol it is compared with: every preset choice of another value, then the choices no key
    sets yet."""
    name = compared_with(study, protocol)
    if name is None:
        return []
    flat = _flat(config)
    out = [{"choice": key, "published": value, "this run": flat.get(key)}
           for key, value in preset(name, config).items() if flat.get(key) != value]
    out += [{"choice": c, "published": p, "this run": mine} for key, c, p, mine in NEEDS_FILES.get(name, [])
            if not flat.get(key)]
    return out + [{"choice": c, "published": p, "this run": mine} for c, p, mine in FIXED.get(name, [])]


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flat(value, name))
        else:
            out[name] = value
    return out


def apply(raw: dict, replace: bool = False) -> dict:
    """The raw config with its protocol's values set where the config does not set them (with
    ``replace``, set over the config's own)."""
    name = raw.get("protocol", "default")
    if not isinstance(name, str):
        from study.errors import ConfigError

        raise ConfigError(f"protocol: expected a name, got {name!r}")
    for key, value in preset(name, raw).items():
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if replace or parts[-1] not in node:
            node[parts[-1]] = value
    return raw
