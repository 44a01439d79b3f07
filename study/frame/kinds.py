"""Study kinds (DESIGN §5): what the SSL and the VLM déjà vu studies do differently.

The stages, markers, storage layout, sharded search, statistics and report scaffolding are
shared; a kind names its models and the split each trains on, the sets it attacks, its search
spaces (which embedding of the public set is searched with which embedding of the queries), its
training recipe, and supplies its embed stage, its measurement and its report body. Kinds live in
their own modules and are imported on first use, so checking a config stays cheap.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from study.config import StudyConfig
from study.errors import ConfigError

# Kind name -> the module that defines ``KIND``.
KINDS = {
    "ssl_dejavu": "study.kinds.ssl_dejavu.kind",
    "vlm_dejavu": "study.kinds.vlm_dejavu.kind",
    "sslmem": "study.kinds.sslmem.kind",
}

MODELS = {"model_a": "target", "model_b": "reference"}

# (side name, split, target model, reference model) per control. Positive: each model attacks its
# own split (side a: A's records, A is the target) and the other's. Null: both attack a holdout
# neither saw, its two halves (a second keyed hash) playing the two sides; its gaps should cover 0.
CONTROLS = {
    "positive": [("a", "target", "model_a", "model_b"), ("b", "reference", "model_b", "model_a")],
    "null": [("a", "holdout", "model_a", "model_b"), ("b", "holdout", "model_b", "model_a")],
}


def side_ids(ids: list[str], control: str, side: str, seed: int) -> list[str]:
    """The sorted ids of one side of a control, from the ids both models were queried with."""
    ids = sorted(ids)
    return [i for i, keep in zip(ids, side_mask(ids, control, side, seed)) if keep]


def side_mask(ids, control: str, side: str, seed: int):
    """(n,) bool: which of ``ids`` belong to one side of a control (all, unless the null control
    halves its holdout by a second keyed hash)."""
    import numpy as np

    from study.core.splits import hash_unit

    if control != "null":
        return np.ones(len(ids), dtype=bool)
    return (hash_unit(ids, seed + 7919) < 0.5) == (side == "a")  # independent of the split plan's hash


@dataclass(frozen=True)
class StudyKind:
    name: str
    title: str
    spaces: Mapping[str, tuple[str, str]]  # space -> (view of the public set, view of the queries)
    recipe: str  # training recipe, a key of study.train.recipes.RECIPES
    check: Callable[[StudyConfig], None]
    embed: Callable[[Any], dict]  # (RunContext) -> stage summary
    measure: Callable[[Any], dict]  # (RunContext) -> stage summary; writes measure/results.json
    headline: Callable[[dict], dict]  # measure results -> the numbers quoted first
    extras: Callable[[Any], dict]  # (RunContext) -> what the kind's report states besides results
    gallery: Callable[[Any, dict], list]  # (RunContext, report) -> gallery items with images
    html: Callable[[dict, list], str]  # (report, gallery) -> the kind's part of report.html
    models: Mapping[str, str] = field(default_factory=lambda: dict(MODELS))  # model -> its own split
    attacked: tuple[str, ...] = ("target", "reference", "holdout")
    record_columns: tuple[str, ...] = ()  # optional record columns the kind reads (checked up front)
    # split -> record fields a record of that split must have, else it is quarantined (core.quality)
    needs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Config sections of the kind's own that its embed and measure stages read (their hashes cover them).
    extra_reads: Callable[[StudyConfig], tuple] = lambda cfg: ()
    # Searches besides each model's in each space: (model, space) -> (view of the public set, view of
    # the queries), such as the VLM one-model test's text retriever (captions -> public captions).
    extra_searches: Callable[[StudyConfig], Mapping[tuple[str, str], tuple[str, str]]] = lambda cfg: {}

    def spaces_for(self, cfg: StudyConfig) -> tuple[str, ...]:
        """The search spaces a config asks for (``search.representations``; empty = all)."""
        wanted = tuple(cfg.search.representations) or tuple(self.spaces)
        bad = [s for s in wanted if s not in self.spaces]
        if bad:
            raise ConfigError(f"search.representations: {bad} not offered by {self.name}; choose from {list(self.spaces)}")
        return wanted

    def models_for(self, cfg: StudyConfig) -> Mapping[str, str]:
        """The models a study has: the kind's pair, or model A alone with ``train.pair: false``
        (the attacked model without a reference: the one-model test only)."""
        return self.models if cfg.train.pair else {"model_a": self.models["model_a"]}

    def searches(self, cfg: StudyConfig) -> dict[tuple[str, str], tuple[str, str]]:
        """Every search the search stage runs: (model, space) -> (public view, query view)."""
        own = {(m, s): self.spaces[s] for m in self.models_for(cfg) for s in self.spaces_for(cfg)}
        return {**own, **self.extra_searches(cfg)}

    def attacked_sets(self, cfg: StudyConfig) -> tuple[str, ...]:
        return tuple(s for s in self.attacked if cfg.splits.uses(s))


def get_kind(name: str) -> StudyKind:
    if name not in KINDS:
        raise ConfigError(f"study: unknown study kind '{name}'; choose from {sorted(KINDS)}")
    return importlib.import_module(KINDS[name]).KIND
