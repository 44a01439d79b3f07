"""Study kinds: what the SSL déjà vu, VLM déjà vu and SSLMem studies do differently.

The stages, markers, storage layout, sharded search, statistics and report scaffolding are
shared; a kind names its models and the split each trains on, the sets it attacks, its search
spaces (which embedding of the public set is searched with which embedding of the queries), its
training recipe and any models besides the pair, and supplies its embed stage, its measurement,
its report body and summary lines and its input checks: everything a kind differs in is a field
of ``StudyKind``, so a kind is one package (``study/kinds/<name>/``) with a ``KIND`` in its
``kind`` module. Kinds are imported on first use, so checking a config stays cheap.

The product's kinds are listed in ``KINDS``; other packages add theirs through the Python entry
point group ``dejavu_study.kinds`` (name = the kind's name, value = the module that defines
``KIND``), for instance in their pyproject.toml::

    [project.entry-points."dejavu_study.kinds"]
    my_kind = "my_package.kind"
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from study.config import StudyConfig
from study.errors import ConfigError

ENTRY_POINTS = "dejavu_study.kinds"
# Kind name -> the module that defines ``KIND`` (the product's own; see ``kind_modules``).
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


def side_unit(ids, seed: int):
    """(n,) float in [0, 1): the keyed hash that halves the null control's holdout (independent of
    the split plan's hash); below 0.5 is side a."""
    from study.core.splits import hash_unit

    return hash_unit(ids, seed + 7919)


def side_mask(ids, control: str, side: str, seed: int, unit=None):
    """(n,) bool: which of ``ids`` belong to one side of a control (all, unless the null control
    halves its holdout by a second keyed hash). ``unit``: a function giving the ids' ``side_unit``,
    for a caller that measures several entries of the same records and hashes them once."""
    import numpy as np

    if control != "null":
        return np.ones(len(ids), dtype=bool)
    return ((unit() if unit else side_unit(ids, seed)) < 0.5) == (side == "a")


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
    # Models besides the pair, trained by the train stage (both get (RunContext, split manifest,
    # stage digest, the stage's summary) and add their models' entries to the summary):
    # ``train_beside`` returns a job of the pair's recipe that trains beside the pair when the
    # cluster has room, else after it, as (TrainJob, training records left out), or None when
    # there is none or it was reused (the VLM text retriever); ``train_after`` trains what comes
    # after the pair itself (the SSL crop classifier).
    train_beside: Callable[..., Any] | None = None
    train_after: Callable[..., None] | None = None
    # What of the config those extra models read besides the train section (hashed into the train
    # stage's marker): the crop rule the SSL crop classifier trains on.
    train_extra: Callable[[StudyConfig], Any] = lambda cfg: None
    # Where a headline entry holds its number (its estimate, beside "ci" and "p_value"); an entry
    # nested one level (the VLM kind's PPG/PRG/AUCG) holds it under "value". Read by the calibration.
    value_key: str = "value"
    # ``dejavu report``: the kind's lines of a report's summary (report.json -> lines).
    summary_lines: Callable[[dict], list[str]] = lambda report: []
    # ``dejavu report list``: the headline number's name and (value, its estimate: a dict with
    # "p_value" and "permutations") from one headline entry.
    list_headline: tuple[str, Callable[[dict], tuple[float, dict]]] | None = None
    # ``dejavu data inspect``: (summary key, counts of one record batch's usable records), or None
    # when the kind has no check of its own.
    inspect_check: tuple[str, Callable[[dict, Any], dict]] | None = None

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

    def searches(self, cfg: StudyConfig, spaces: tuple[str, ...] | None = None) -> dict[tuple[str, str], tuple[str, str]]:
        """Every search the search stage runs: (model, space) -> (public view, query view), in
        ``spaces`` (``RunContext.spaces``) or the config's."""
        own = {(m, s): self.spaces[s] for m in self.models_for(cfg) for s in (spaces or self.spaces_for(cfg))}
        return {**own, **self.extra_searches(cfg)}

    def attacked_sets(self, cfg: StudyConfig, uses: Callable[[str], bool] | None = None) -> tuple[str, ...]:
        """The attacked splits the study has: ``uses`` (``RunContext.uses``, which knows the
        user's splits) or the config's plan."""
        return tuple(s for s in self.attacked if (uses or cfg.splits.uses)(s))


def kind_modules() -> dict[str, str]:
    """Every kind: the product's and those installed packages add (entry point group
    ``dejavu_study.kinds``), name -> the module that defines ``KIND``."""
    from importlib.metadata import entry_points

    added = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}
    return {**added, **KINDS}  # an added kind cannot replace one of the product's


def get_kind(name: str) -> StudyKind:
    modules = KINDS if name in KINDS else kind_modules()
    if name not in modules:
        raise ConfigError(f"study: unknown study kind '{name}'; choose from {sorted(modules)}")
    kind = importlib.import_module(modules[name]).KIND
    if not isinstance(kind, StudyKind) or kind.name != name:
        raise ConfigError(f"study: {modules[name]}.KIND is not the StudyKind named '{name}'")
    return kind
