"""Per-record outcomes of the SSL test, scored in Ray tasks, one task per part of a model's search
results, and written to Parquet beside them (``stages.outcome_files``); the driver receives counts.

Layout of ``measure/outcomes/<model>/<split>/<space>/``::

    part-00000.parquet, ...   id, top1, top5 (the k-NN attack's label is right, or among its top 5
                              by votes), confidence (minus the entropy of the vote shares), label
                              (the record's own: the per-class breakdown)

Queries without a label have no ground truth and are left out (counted); a neighbour without one
casts no vote (counted). The labels of the public and attacked records (``LabelTables``) are
gathered batch by batch from the object store, where tasks put them in blocks of id ranges. A predictor of the one-model test writes its
outcomes in the same columns under ``measure/outcomes/<predictor>/<split>/`` (``write_predicted``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray

from study.core.topk import label_votes, predict_from_votes
from study.data.lookup import IdIndex
from study.stages.id_tables import Blocks, build, plan_bounds, split_batches
from study.stages.outcome_files import WHOLE
from study.search.results import check_queries, public_rows
from study.stages.outcome_files import read_outcomes, score_part_file, write_outcomes

SCORE_ROWS = 65_536  # queries per scoring batch: ~k x 16 bytes each at its peak, ~100 MB at k = 100
COUNTS = ("neighbours", "unlabelled_neighbours", "unlabelled_queries")


@dataclass(frozen=True)
class Labels:
    """Labels gathered from a side's blocks (-1 where missing)."""

    values: np.ndarray

    @classmethod
    def concat(cls, parts: list["Labels"], context=None) -> "Labels":
        return cls(np.concatenate([p.values for p in parts]))


@dataclass(frozen=True)
class LabelBlock:
    """One id range of a split's members (``id_tables``): their ids and labels."""

    index: IdIndex
    labels: np.ndarray

    def whole(self, context=None) -> Labels:
        return Labels(self.labels)

    def take(self, rows: np.ndarray, context=None) -> Labels:
        return Labels(self.labels[rows])


@dataclass(frozen=True)
class LabelTables:
    """The labels (-1 where missing) of the public and the attacked splits' records, in blocks of
    id ranges (``id_tables.Blocks``): what a scoring task gathers a batch's neighbours and queries
    from."""

    num_classes: int
    public: Blocks
    attacked: dict  # split -> Blocks

    @classmethod
    def in_memory(cls, num_classes: int, public: tuple, attacked: dict) -> "LabelTables":
        """From (IdIndex, labels) pairs held whole (tests, small inputs)."""
        return cls(num_classes, Blocks.one(LabelBlock(*public)), {s: Blocks.one(LabelBlock(*t)) for s, t in attacked.items()})


def split_labels(splits_dir: str, split: str, block=WHOLE) -> tuple[IdIndex, np.ndarray]:
    """Ids of a split's members (those in the id range ``block``) as an ``IdIndex`` and their
    labels (-1 where missing), in the same rows."""
    labels = []

    def ids():
        for batch in split_batches(splits_dir, (split,), block):
            labels.append(batch.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64))
            yield batch.column("id")

    index = IdIndex(ids())
    return index, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def label_block(block, splits_dir: str, split: str) -> tuple[None, LabelBlock]:
    """One id range of a split's labels; runs in a task (``id_tables.build``)."""
    return None, LabelBlock(*split_labels(splits_dir, split, block))


def label_tables(splits_dir: str, attacked, num_classes: int, per_block: int) -> LabelTables:
    """Each split's labels in id ranges of about ``per_block`` members, one task a range; the
    driver holds the blocks' refs."""
    plan = ray.remote(num_cpus=1)(plan_bounds)
    splits = ["public", *attacked]
    bounds = ray.get([plan.remote(splits_dir, (split,), per_block) for split in splits])
    blocks = {split: build(label_block, b, splits_dir, split)[0] for split, b in zip(splits, bounds)}
    return LabelTables(num_classes, blocks.pop("public"), blocks)


def outcome_table(ids: np.ndarray, top1: np.ndarray, top5: np.ndarray, confidence: np.ndarray,
                  label: np.ndarray) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.string()), "top1": pa.array(top1, pa.bool_()),
                     "top5": pa.array(top5, pa.bool_()), "confidence": pa.array(confidence, pa.float64()),
                     "label": pa.array(np.asarray(label, np.int32), pa.int32())})


def score_part(tables: LabelTables, results_uri: str, part: int, out_uri: str, split: str,
               batch_rows: int = SCORE_ROWS) -> dict:
    """Top-1/top-5 correctness and confidence of every labelled query of one part of a model's
    search results on ``split``, from its neighbours' labels, written to its outcome file; returns
    counts ({"records", "neighbours", "unlabelled_neighbours", "unlabelled_queries"}). Neighbours
    and queries must be records of the public and the attacked split (a StudyError otherwise)."""
    truth = tables.attacked[split]

    def score(q_ids: np.ndarray, neighbor_ids: pa.Array) -> tuple[pa.Table, dict]:
        if not len(q_ids):
            return outcome_table(q_ids, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int32)), {}
        gathered = {}

        def rows_of(ids):
            rows, gathered["public"] = tables.public.gather(ids)
            return rows

        rows = public_rows(neighbor_ids, rows_of, results_uri)
        nl = np.where(rows >= 0, gathered["public"].values[np.clip(rows, 0, None)], -1)
        pred, top5, conf = predict_from_votes(label_votes(nl, tables.num_classes), top=5)
        t_rows, got = truth.gather(q_ids)
        check_queries(q_ids, t_rows, results_uri)
        labels = got.values[t_rows]
        keep = labels >= 0  # an unlabelled query would count as right when no neighbour votes (-1 == -1)
        table = outcome_table(q_ids[keep], (pred == labels)[keep], (top5 == labels[:, None]).any(axis=1)[keep],
                              conf[keep], labels[keep])
        return table, {"neighbours": (rows >= 0).sum(), "unlabelled_neighbours": ((rows >= 0) & (nl < 0)).sum(),
                       "unlabelled_queries": (~keep).sum()}

    return {**dict.fromkeys(COUNTS, 0), **score_part_file(results_uri, part, out_uri, batch_rows, score)}


def write_predicted(out_uri: str, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    confidence: np.ndarray | None = None) -> int:
    """A predictor's outcomes from its class scores (ranked as the k-NN votes are, unless its own
    ``confidence`` is given) on labelled records; returns how many."""
    pred, top5, conf = predict_from_votes(probs)
    conf = conf if confidence is None else np.asarray(confidence, dtype=np.float64)
    write_outcomes(out_uri, outcome_table(ids, pred == labels, (top5 == labels[:, None]).any(axis=1), conf, labels))
    return len(ids)


@dataclass(frozen=True)
class Outcomes:
    """One model's (or predictor's) outcomes on one query set, sorted by id."""

    ids: np.ndarray  # (n,) str
    top1: np.ndarray  # (n,) bool
    top5: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,) float64
    label: np.ndarray  # (n,) int64, the record's label (-1 in files written without it)

    @staticmethod
    def read(uri: str) -> "Outcomes":
        table, ids, order = read_outcomes(uri)
        if table is None or not len(ids):
            return Outcomes(np.zeros(0, str), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64))
        top1, top5, conf = (table.column(c).to_numpy(zero_copy_only=False)[order] for c in ("top1", "top5", "confidence"))
        label = (table.column("label").to_numpy(zero_copy_only=False)[order] if "label" in table.column_names
                 else np.full(len(ids), -1))
        return Outcomes(ids[order], top1.astype(bool), top5.astype(bool), conf.astype(np.float64),
                        label.astype(np.int64))
