"""The measure stages stop on search results that do not belong to the run's split manifest and
count what they leave out, instead of dropping records without a word (SSL and VLM)."""
from __future__ import annotations

import numpy as np
import pytest

from study.data.lookup import IdIndex
from study.errors import StudyError
from study import storage
from study.kinds.ssl_dejavu.outcomes import LabelTables, Outcomes, score_part
from study.core.object_sets import ObjectSets
from study.kinds.vlm_dejavu import outcomes
from study.kinds.vlm_dejavu.objects import ObjectTables, Texts
from study.search.results import (PARTS, ResultWriter, check_queries, check_same_queries, iter_results, neighbour_matrix,
                                  public_rows)

PUBLIC = [f"p{i}" for i in range(8)]
PUBLIC_LABELS = np.array([0, 1, 2, 0, 1, 2, -1, -1])  # p6, p7: public records without a label
QUERIES = ["q0", "q1", "q2", "q3"]


def write_results(uri, query_ids, neighbours):
    """One model's search results: a neighbour list per query (None pads a short list)."""
    writer = ResultWriter(str(uri), "key", rows_per_part=3)
    k = max(len(n) for n in neighbours)
    padded = np.array([list(n) + [None] * (k - len(n)) for n in neighbours], dtype=object)
    writer.write(list(query_ids), padded, np.zeros((len(query_ids), k), np.float32))
    writer.close()
    return str(uri)


def knn_outcomes(uri, public, truth, num_classes, batch_rows=65_536):
    """The SSL scoring of every part of one model's search results on the "target" split, as the
    measure stage's tasks run it: (Outcomes read back from the files, summed counts)."""
    tables = LabelTables.in_memory(num_classes, public, {"target": truth})
    out, counts = uri + "-outcomes", {}
    for part in range(storage.read_json(storage.join(uri, PARTS))["complete"]):
        for name, value in score_part(tables, uri, part, out, "target", batch_rows).items():
            counts[name] = counts.get(name, 0) + value
    return Outcomes.read(out), counts


def public():
    return IdIndex([PUBLIC]), PUBLIC_LABELS


def truth(labels=(0, 1, 2, 0)):
    return IdIndex([QUERIES]), np.array(labels)


def test_unlabelled_neighbours_and_queries_are_counted_not_hidden(tmp_path):
    uri = write_results(tmp_path / "a", QUERIES, [["p6", "p7", None], ["p1", "p7", "p4"], ["p2"], ["p6", "p7"]])
    out, counts = knn_outcomes(uri, public(), truth(labels=(0, 1, 2, -1)), num_classes=3, batch_rows=2)
    # q3 has no label: left out, not scored right because no neighbour voted (-1 == -1)
    assert list(out.ids) == ["q0", "q1", "q2"]
    # q0's neighbours carry no label: no vote, so no prediction and wrong
    assert out.top1.tolist() == [False, True, True]
    assert counts == {"records": 4, "neighbours": 8, "unlabelled_neighbours": 5, "unlabelled_queries": 1}


def test_neighbour_outside_the_public_split_names_results_and_ids(tmp_path):
    uri = write_results(tmp_path / "a", QUERIES, [["p0", "x9"], ["p1"], ["p2", "x3"], ["p3"]])
    with pytest.raises(StudyError) as err:
        knn_outcomes(uri, public(), truth(), num_classes=3)
    msg = str(err.value)
    assert uri in msg and "x3, x9" in msg and "public split" in msg and "\n" not in msg


def test_query_outside_the_attacked_split(tmp_path):
    uri = write_results(tmp_path / "a", ["q0", "elsewhere"], [["p0"], ["p1"]])
    with pytest.raises(StudyError, match=r"1 of 2 queries .*first: elsewhere"):
        knn_outcomes(uri, public(), truth(), num_classes=3)


def test_models_queried_with_different_records(tmp_path):
    a = write_results(tmp_path / "a", QUERIES, [["p0"]] * 4)
    b = write_results(tmp_path / "b", ["q3", "q1", "q0"], [["p0"]] * 3)  # q2 missing, other order
    ids = {m: knn_outcomes(u, public(), truth(), 3)[0].ids for m, u in (("model_a", a), ("model_b", b))}
    with pytest.raises(StudyError) as err:
        check_same_queries(ids, {"model_a": a, "model_b": b})
    msg = str(err.value)
    assert "4 queries" in msg and "model_b" in msg and f"({b}) 3" in msg
    assert "1 only in model_a's, 0 only in model_b's (first: q2)" in msg
    # the same records in another order pass
    check_same_queries({"model_a": np.array(QUERIES), "model_b": np.array(QUERIES[::-1])}, {"model_a": a, "model_b": b})


def test_repeated_queries_are_not_the_same_records(tmp_path):
    with pytest.raises(StudyError, match="repeated"):
        check_same_queries({"model_a": np.array(["q0", "q1"]), "model_b": np.array(["q0", "q1", "q1"])},
                           {"model_a": "a", "model_b": "b"})


def vlm_tables() -> ObjectTables:
    """Objects cat (0), dog (1), tree (2); public p0..p7; queries q0..q3 with their captions."""
    import pyarrow as pa

    public = ObjectSets.from_lists([[0], [1], [2], [0, 1], [1, 2], [0, 2], [], [0, 1, 2]], 3)
    attacked = ObjectSets.from_lists([[0, 1], [2], [0, 2], [1]], 3)
    captions = ["a cat", "a tree", "nothing named", "a dog"]
    return ObjectTables.in_memory(["cat", "dog", "tree"], PUBLIC, public, QUERIES, attacked,
                                  Texts.from_arrow(pa.array(captions)))


def test_vlm_neighbours_must_be_public(tmp_path):
    uri = write_results(tmp_path / "a", QUERIES, [["p0", "p1"], ["p2"], ["nope", "p3"], ["p4"]])
    with pytest.raises(StudyError, match=r"1 neighbour\(s\) .*first: nope"):
        outcomes.score_part(vlm_tables(), uri, 0, str(tmp_path / "out"), (1, 2), 3)
    # the part without it scores: q3's nearest is p4 (dog, tree), its ground truth dog
    assert outcomes.score_part(vlm_tables(), uri, 1, str(tmp_path / "out"), (1,), 3) == {
        "records": 1, "no_gt/all": 0, "no_gt/unnamed": 1}  # its caption names its one object


def test_vlm_query_outside_the_attacked_split(tmp_path):
    uri = write_results(tmp_path / "a", ["q0", "elsewhere"], [["p0"], ["p1"]])
    with pytest.raises(StudyError, match=r"1 of 2 queries .*first: elsewhere"):
        outcomes.score_part(vlm_tables(), uri, 0, str(tmp_path / "out"), (1,), 3)


def test_vlm_outcomes_align_by_id_whatever_the_result_order(tmp_path):
    a = write_results(tmp_path / "a", ["q2", "q0", "q1"], [["p2"], ["p0"], ["p1", "p5"]])
    b = write_results(tmp_path / "b", ["q1", "q2", "q0"], [["p1", "p5"], ["p2"], ["p0"]])
    for name, uri in (("a", a), ("b", b)):
        outcomes.score_part(vlm_tables(), uri, 0, str(tmp_path / f"out-{name}"), (1, 2), 3)
    read = {n: outcomes.Outcomes(str(tmp_path / f"out-{n}")) for n in "ab"}
    keys = [(k, rule) for k in (1, 2) for rule in ("union", "top_n")]
    for key in keys:
        (ia, sa), (ib, sb) = (read[n].entry("all", key) for n in "ab")
        assert ia.tolist() == ib.tolist() == ["q0", "q1", "q2"]
        assert all(np.array_equal(sa[c], sb[c]) for c in sa)
    # By hand, k = 2, union: q0 (cat, dog) <- p0 (cat): 1 hit of 1; q1 (tree) <- p1, p5 (dog; cat, tree):
    # 1 hit of 3; q2 (cat, tree) <- p2 (tree): 1 hit of 1.
    _, got = read["a"].entry("all", (2, "union"))
    assert got["hits"].tolist() == [1, 1, 1] and got["pred_size"].tolist() == [1, 3, 1]
    assert got["recall"].tolist() == [0.5, 1.0, 0.5]
    # Unnamed: q0's caption names the cat (left: dog), q1's the tree (left: none, so q1 is left out).
    iu, su = read["a"].entry("unnamed", (2, "union"))
    assert iu.tolist() == ["q0", "q2"] and su["hits"].tolist() == [0, 1]


def test_unknown_neighbours_exclude_padding(tmp_path):
    uri = write_results(tmp_path / "a", ["q0", "q1"], [["p0", None, None], ["zz", "p1", "yy"]])
    batch = next(iter_results(uri, 10))
    rows, unknown = neighbour_matrix(batch.column("neighbor_ids"), IdIndex([PUBLIC]).rows)
    assert rows.tolist() == [[0, -1, -1], [-1, 1, -1]] and sorted(unknown) == ["yy", "zz"]
    with pytest.raises(StudyError, match="2 neighbour"):
        public_rows(batch.column("neighbor_ids"), IdIndex([PUBLIC]), uri)
    check_queries(np.array(["q0"]), np.array([0]), uri)  # a known query passes
