"""Per-record outcomes of the VLM test, scored in Ray tasks, one task per part of a model's search
results, and written to Parquet beside them; the driver receives counts.

Layout of ``measure/outcomes/<model>/<split>/<space>/`` (the search results' own layout)::

    part-00000.parquet, ...   id, gt/all, gt/unnamed (ground-truth sizes; 0: no ground truth for
                              that variant, the record is left out of it), nearest (the nearest
                              neighbour's distance; NaN without one), and per k, prediction
                              rule and variant ``k=<k>/<rule>/<variant>/hits`` and ``.../pred``

Counts only (int32): precision, recall and F follow from them (``object_sets.scores``) exactly as
the scoring computed them. A task gathers what each batch needs of the object tables
(``objects.ObjectTables``: the public and attacked records' object sets and the attacked
captions, in blocks of id ranges in the object store); no per-record table passes through the
driver.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from study.core.object_sets import PREDICTION_RULES, ObjectSets, neighbour_votes, overlap, scores
from study.core.objects import named_objects
from study.frame.kinds import side_unit
from study.search.results import check_queries, public_rows
from study.stages.outcome_files import WHOLE, read_outcomes, score_part_file

SCORE_ROWS = 8_192  # queries per scoring batch: ~k x 5 objects x 40 bytes each at its peak, ~160 MB at k = 100
VARIANTS = ("all", "unnamed")  # ground truth: every object, or those the caption does not name


def column(k: int, rule: str, variant: str, field: str) -> str:
    return f"k={k}/{rule}/{variant}/{field}"


def ground_truth(names: list, records, rows: np.ndarray) -> dict[str, ObjectSets]:
    """{variant: object sets of the given rows of the attacked ``records`` (``ObjectRecords``)};
    the unnamed variant drops the objects the record's caption names."""
    all_sets = records.objects.take(rows)
    unnamed = []
    for j, r in enumerate(rows):
        ids = all_sets.row(j)
        objs = [names[o] for o in ids]
        named = set(named_objects(records.captions[int(r)], objs))
        unnamed.append([o for o, name in zip(ids, objs) if name not in named])
    return {"all": all_sets, "unnamed": ObjectSets.from_lists(unnamed, all_sets.vocab_size)}


def nearest_distance(distances: pa.Array) -> np.ndarray:
    """(n,) float32: each query's first (nearest) neighbour distance, NaN where it has none."""
    first = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(distances), 0), distances,
                                       pa.scalar([float("nan")], distances.type)), 0)
    return first.to_numpy(zero_copy_only=False).astype(np.float32)


def score_table(names: list, truths: dict, public_objects: ObjectSets, q_ids: np.ndarray, I: np.ndarray, ks,
                top_n: int, nearest: np.ndarray | None = None) -> pa.Table:
    """The outcome columns of one batch of queries (ids (n,); their ground truth, ``ground_truth``;
    their neighbours' rows (n, K) in ``public_objects``; the nearest neighbour's distance (n,)). A
    query's votes and predictions depend on its neighbours alone, so each k's votes are counted
    once for the batch and each rule's prediction serves both variants."""
    cols = {"id": pa.array(q_ids, pa.string())}
    cols.update({f"gt/{v}": pa.array(gt.sizes().astype(np.int32)) for v, gt in truths.items()})
    cols["nearest"] = pa.array(np.full(len(q_ids), np.nan, np.float32) if nearest is None else nearest, pa.float32())
    kept = {v: np.flatnonzero(gt.sizes() > 0) for v, gt in truths.items()}
    for k in ks:
        votes = neighbour_votes(public_objects, I, min(k, I.shape[1])) if len(q_ids) else None
        for rule, predict in PREDICTION_RULES.items():
            pred = predict(votes, top_n) if votes is not None else None
            for variant, gt in truths.items():
                hits, size = np.zeros(len(q_ids), np.int32), np.zeros(len(q_ids), np.int32)
                if len(kept[variant]):
                    got = overlap(gt.take(kept[variant]), pred.take(kept[variant]))
                    hits[kept[variant]], size[kept[variant]] = got["hits"], got["pred_size"]
                cols[column(k, rule, variant, "hits")] = pa.array(hits)
                cols[column(k, rule, variant, "pred")] = pa.array(size)
    return pa.table(cols)


def score_part(tables, results_uri: str, part: int, out_uri: str, ks: tuple, top_n: int) -> dict:
    """Score one part of a model's search results, SCORE_ROWS queries at a time (a part holds up
    to ``search.rows_per_file`` queries, each with k neighbour ids), and write its outcomes;
    returns counts ({"records", "no_gt/<variant>"}). Each batch gathers its neighbours' and its
    queries' records from the tables' blocks (``objects.ObjectTables``). A neighbour that is not a
    public record, or a query that is not an attacked record, stops the run (``search.results``
    checks)."""
    def score(q_ids: np.ndarray, neighbor_ids: pa.Array, distances: pa.Array) -> tuple[pa.Table, dict]:
        if not len(q_ids):
            empty = ObjectSets.from_lists([], len(tables.names))
            return score_table(tables.names, {v: empty for v in VARIANTS}, empty, q_ids, np.zeros((0, 0), np.int64),
                               ks, top_n), {}
        gathered = {}

        def rows_of(ids):
            rows, gathered["public"] = tables.public.gather(ids)
            return rows

        I = public_rows(neighbor_ids, rows_of, results_uri)
        rows, attacked = tables.attacked.gather(q_ids)
        check_queries(q_ids, rows, results_uri)
        table = score_table(tables.names, ground_truth(tables.names, attacked, rows), gathered["public"].objects,
                            q_ids, I, ks, top_n, nearest_distance(distances))
        return table, {f"no_gt/{v}": (table.column(f"gt/{v}").to_numpy() == 0).sum() for v in VARIANTS}

    return {**{f"no_gt/{v}": 0 for v in VARIANTS}, **score_part_file(results_uri, part, out_uri, SCORE_ROWS, score,
                                                                         ("neighbor_ids", "distances"))}


class Outcomes:
    """One model's outcome files of one split (the records of one id range), read once: counts
    stay int32 Arrow columns (a few bytes per record and entry) and each entry's scores are made
    when asked for, so a task holds one entry's float arrays at a time. Records in id order: the
    statistics do not depend on the order of the files."""

    def __init__(self, uri: str, block: tuple = WHOLE):
        self.table, self.ids, self.order = read_outcomes(uri, block)
        self._kept: dict = {}
        self._units: dict = {}

    def kept(self, variant: str) -> np.ndarray:
        """Rows of the records with ground truth for ``variant``, in id order."""
        if variant not in self._kept:
            gt = self.table.column(f"gt/{variant}").to_numpy() if len(self.ids) else np.zeros(0, np.int32)
            self._kept[variant] = self.order[gt[self.order] > 0]
        return self._kept[variant]

    def side_unit(self, seed: int, variant: str) -> np.ndarray:
        """``kinds.side_unit`` of the records ``entry`` gives for ``variant``: every record is hashed
        once, however many entries a task makes."""
        if seed not in self._units:
            self._units[seed] = side_unit(self.ids, seed)
        return self._units[seed][self.kept(variant)]

    def entry(self, variant: str, key: tuple) -> tuple[np.ndarray, dict]:
        """(ids of the records with ground truth for ``variant``, in id order; their scores at
        (k, rule) ``key``, with "nearest", the nearest neighbour's distance)."""
        if not len(self.ids):
            return np.zeros(0, str), {**scores(*(np.zeros(0, np.int64),) * 3), "nearest": np.zeros(0, np.float32)}
        kept = self.kept(variant)
        gt = self.table.column(f"gt/{variant}").to_numpy()[kept]
        hits, pred = (self.table.column(column(*key, variant, f)).to_numpy()[kept] for f in ("hits", "pred"))
        nearest = (self.table.column("nearest").to_numpy()[kept] if "nearest" in self.table.column_names
                   else np.full(len(kept), np.nan, np.float32))  # files written without it
        return self.ids[kept], {**scores(hits, pred, gt), "nearest": nearest}
