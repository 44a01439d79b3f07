"""Per-record outcomes of the SSL test, scored in Ray tasks, one task per part of a model's search
results, and written to Parquet beside them (``stages.outcome_files``); the driver receives counts.

Layout of ``measure/outcomes/<model>/<split>/<space>/``::

    part-00000.parquet, ...   id, top1, top5 (the k-NN attack's label is right, or among its top 5
                              by votes), confidence (minus the entropy of the vote shares), label
                              (the record's own: the per-class breakdown)

Queries without a label have no ground truth and are left out (counted); a neighbour without one
casts no vote (counted). The labels of the public and attacked records (``LabelTables``) come
from the object store, where one task put them. A predictor of the one-model test writes its
outcomes in the same columns under ``measure/outcomes/<predictor>/<split>/`` (``write_predicted``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from study.core.topk import label_votes, predict_from_votes
from study.data.loading import iter_split
from study.data.lookup import IdIndex
from study.search.results import check_queries, public_rows
from study.stages.outcome_files import read_outcomes, score_part_file, write_outcomes

SCORE_ROWS = 65_536  # queries per scoring batch: ~k x 16 bytes each at its peak, ~100 MB at k = 100
COUNTS = ("neighbours", "unlabelled_neighbours", "unlabelled_queries")


@dataclass(frozen=True)
class LabelTables:
    """The labels (-1 where missing) of the public and the attacked splits' records, by row of an
    ``IdIndex`` of their ids: what a scoring task joins the neighbours and the queries with."""

    num_classes: int
    public: IdIndex
    public_labels: np.ndarray
    attacked: dict  # split -> (IdIndex, labels)


def split_labels(splits_dir: str, split: str) -> tuple[IdIndex, np.ndarray]:
    """Ids of a split as an ``IdIndex`` and their labels (-1 where missing), in the same rows."""
    labels = []

    def ids():
        for batch in iter_split(splits_dir, split):
            labels.append(batch.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64))
            yield batch.column("id")

    index = IdIndex(ids())
    return index, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def label_tables(splits_dir: str, attacked, num_classes: int) -> LabelTables:
    public, labels = split_labels(splits_dir, "public")
    return LabelTables(num_classes, public, labels, {split: split_labels(splits_dir, split) for split in attacked})


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
    truth_index, truth_labels = tables.attacked[split]

    def score(q_ids: np.ndarray, neighbor_ids: pa.Array) -> tuple[pa.Table, dict]:
        if not len(q_ids):
            return outcome_table(q_ids, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int32)), {}
        rows = public_rows(neighbor_ids, tables.public, results_uri)
        nl = np.where(rows >= 0, tables.public_labels[np.clip(rows, 0, None)], -1)
        pred, top5, conf = predict_from_votes(label_votes(nl, tables.num_classes), top=5)
        t_rows = truth_index.rows(q_ids)
        check_queries(q_ids, t_rows, results_uri)
        labels = truth_labels[t_rows]
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
