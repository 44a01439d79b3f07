"""The split of each record, as every stage computes it from a batch of records (pure).

The splits stage writes the manifest, but the streaming stages (embed plan, embedding, streamed
training) recompute a record's split in their own tasks from the record itself, so they need no
join with the manifest. ``SplitPlan`` is that one rule, shared by all of them:

- fractions (the default): the keyed-hash split of the id (``core.splits.assign_splits``), then
  ``QUARANTINED`` for a record its split cannot use (``core.quality.record_reasons``: a field the
  split needs is missing, or a box or label is unusable);
- per-class quotas (``quotas``: split -> records per class, with the per-class ``thresholds`` the
  splits stage computed, ``core.balance``): a record with an unusable box or label, or without a
  label, is quarantined; the others go to the first split whose needs they meet and whose class
  threshold their hash draw is under, or stay unassigned;
- given splits (``assigned``: a function from a batch's ids to their splits, the user's own,
  ``study.data.assignments``), then quarantine as for fractions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from study.core.balance import assign_balanced
from study.core.quality import NEAR_DUPLICATE, record_reasons
from study.core.splits import assign_splits, hash_unit

QUARANTINED = "quarantined"
# Record columns the rule reads besides the id (those the records have).
CHECKED = ("width", "height", "label", "boxes", "caption", "objects")


@dataclass(frozen=True)
class SplitPlan:
    """``fractions`` and ``seed``: the keyed-hash plan; ``needs``: split -> record fields that split
    needs (the study kind's); ``available``: the columns the records have (none: the keyed-hash
    plan alone, as with no needs); ``quotas`` and ``thresholds``: per-class quotas (above)."""

    fractions: Mapping[str, float]
    seed: int
    needs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    available: tuple[str, ...] = ()
    quotas: Mapping[str, int] = field(default_factory=dict)
    thresholds: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    excluded: frozenset = frozenset()  # ids quarantined as near-duplicates of a record in another split
    assigned: Callable[[Sequence[str]], np.ndarray] | None = None  # ids -> their given splits

    def columns(self) -> list[str]:
        """The columns a batch must carry (besides ``id``) for ``assign``."""
        return [c for c in CHECKED if c in self.available]

    def _columns_of(self, batch) -> dict[str, list]:
        missing = [c for c in self.columns() if c not in batch.column_names]
        if missing:  # a caller that projected too few columns would quarantine whole splits
            raise ValueError(f"split plan needs column(s) {missing} in the batch")
        return {c: batch.column(c).to_pylist() for c in self.columns()}

    def features(self, batch) -> tuple[np.ndarray, list, dict[str, np.ndarray], list[str | None]]:
        """What per-class quotas decide on: (hash draws (n,), labels, {split: usable (n,) bool} for
        the quota splits, the split-independent reason per record or None)."""
        cols = self._columns_of(batch)
        n = batch.num_rows
        labels = cols.get("label", [None] * n)
        anywhere = record_reasons(cols, np.full(n, "", dtype=object), {"": ("label",)})
        by_needs: dict[tuple, np.ndarray] = {}  # splits with the same needs share one check
        eligible = {}
        for s in self.quotas:
            key = tuple(self.needs.get(s, ()))
            if key not in by_needs:
                by_needs[key] = np.array([r is None for r in record_reasons(cols, np.full(n, s, dtype=object),
                                                                            self.needs)])
            eligible[s] = by_needs[key]
        return hash_unit(batch.column("id").to_pylist(), self.seed), labels, eligible, anywhere

    def assign_with_reasons(self, batch) -> tuple[np.ndarray, list[str | None]]:
        """(split per record (object array), quarantine reason per record or None) of a pyarrow
        table or record batch holding ``id`` and ``columns()``."""
        if self.quotas:
            u, labels, eligible, reasons = self.features(batch)
            split = assign_balanced(u, labels, eligible, self.thresholds, list(self.quotas))
        else:
            cols = self._columns_of(batch)
            ids = batch.column("id")
            split = self.assigned(ids) if self.assigned else assign_splits(ids.to_pylist(), self.fractions, self.seed)
            reasons = record_reasons(cols, split, self.needs)
        if self.excluded:
            for i, rid in enumerate(batch.column("id").to_pylist()):
                if reasons[i] is None and rid in self.excluded:
                    reasons[i] = NEAR_DUPLICATE
        for i, reason in enumerate(reasons):
            if reason is not None:
                split[i] = QUARANTINED
        return split, reasons

    def assign(self, batch) -> np.ndarray:
        return self.assign_with_reasons(batch)[0]

