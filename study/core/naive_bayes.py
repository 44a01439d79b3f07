"""The naive-Bayes correlation predictor of the one-model test (docs/concepts/ssl-dejavu.md): a record's class
from the tags of what the attack sees (its background crop), learnt from public records only.

Per-class tag counts; the score of class c for a record with tags T is
``prod over t in T of (count(t, c) + alpha) / (count(t) + alpha * C)``, the published
count(t, c) / count(t) with add-alpha smoothing so an unseen (tag, class) pair does not zero a
class. Computed in logs; scores are normalised over the classes, and the measure stage ranks them
as it ranks the k-NN attack's label votes (confidence = minus their entropy). Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass
class TagCounts:
    """count(t, c) as a (tags, classes) int64 table over a tag vocabulary, and records per class."""

    vocab: dict[str, int]
    counts: np.ndarray
    class_counts: np.ndarray

    @classmethod
    def empty(cls, num_classes: int) -> "TagCounts":
        return cls({}, np.zeros((0, num_classes), np.int64), np.zeros(num_classes, np.int64))

    def add(self, tag_lists: Iterable[Sequence[str]], labels: Sequence[int]) -> None:
        """Count a batch of labelled records (labels < 0 are skipped); a tag counts once per record."""
        rows, cols = [], []
        for tags, label in zip(tag_lists, labels):
            if label < 0:
                continue
            self.class_counts[label] += 1
            for t in set(tags):
                rows.append(self.vocab.setdefault(t, len(self.vocab)))
                cols.append(label)
        if len(self.vocab) > len(self.counts):
            grown = np.zeros((len(self.vocab), self.counts.shape[1]), np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        np.add.at(self.counts, (np.asarray(rows, np.int64), np.asarray(cols, np.int64)), 1)


def probabilities(table: TagCounts, tag_lists: Sequence[Sequence[str]], alpha: float = 1.0) -> np.ndarray:
    """(records, classes) normalised scores; a record without a known tag gets the class prior
    (the public records' class shares)."""
    num_classes = table.counts.shape[1]
    per_tag = table.counts.sum(axis=1, keepdims=True)
    log_ratio = np.log(table.counts + alpha) - np.log(per_tag + alpha * num_classes)  # (tags, classes)
    prior = table.class_counts / max(1, table.class_counts.sum())
    out = np.tile(prior, (len(tag_lists), 1))
    for i, tags in enumerate(tag_lists):
        # Summed in tag order: a set's order follows the process's string hashing, and float sums
        # in another order differ in the last bits, so reruns would not give identical scores.
        rows = [table.vocab[t] for t in sorted(set(tags)) if t in table.vocab]
        if rows:
            score = log_ratio[rows].sum(axis=0)
            p = np.exp(score - score.max())
            out[i] = p / p.sum()
    return out


PUBLISHED_SMOOTH = 1e-10  # the one-model SSL test's reference code (its default --smooth)


def published_scores(table: TagCounts, tag_lists: Sequence[Sequence[str]], smooth: float = PUBLISHED_SMOOTH) -> np.ndarray:
    """(records, classes) unnormalised joint probabilities, as the published code computes them:
    for class c, the product over the record's tags t of count(t, c) / count(t), where a tag the
    class never had counts ``smooth`` and a tag no public record had counts ``smooth / smooth``
    (1); a record without tags scores 0 for every class. Products in float64, as published (a long
    tag list may underflow to 0, as it would there). Its confidence is the top class's score."""
    num_classes = table.counts.shape[1]
    per_tag = table.counts.sum(axis=1)
    out = np.zeros((len(tag_lists), num_classes))
    for i, tags in enumerate(tag_lists):
        tags = sorted(set(tags))  # summed in a fixed order (see ``probabilities``)
        if not tags:
            continue
        joint = np.ones(num_classes)
        for t in tags:
            row = table.vocab.get(t)
            if row is None:
                continue  # smooth / smooth
            joint *= np.where(table.counts[row] > 0, table.counts[row], smooth) / per_tag[row]
        out[i] = joint
    return out


def predict(table: TagCounts, tag_lists: Sequence[Sequence[str]], alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its normalised score) per record."""
    p = probabilities(table, tag_lists, alpha)
    return p.argmax(axis=1), p.max(axis=1)
