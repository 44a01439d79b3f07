"""Splits the user gives (splits.assignments): both file forms, every check with its one-line error
or its count, the listed ids the data lacks found by a scan of the record shards, and the split of
each record (the lookup every stage's plan uses) against a dictionary of what the file says."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.core.split_plan import QUARANTINED, SplitPlan
from study.core.splits import UNASSIGNED
from study.data import records
from study.data.assignments import Assigned, check_assignments, normalise, read_assignments
from study.errors import ConfigError, DataError


def _parquet(path, column: str, rows: list[tuple[str, str]]) -> str:
    pq.write_table(pa.table({column: [i for i, _ in rows], "split": [s for _, s in rows]}), path)
    return str(path)


def _records(root, ids: list[str], captions=None) -> str:
    for part in range(2):  # two shards, the ids dealt between them
        rows = {c: [] for c in records.RECORD_SCHEMA.names}
        for j, rid in enumerate(ids[part::2]):
            caption = None if captions is None else captions[part + 2 * j]
            for c, v in zip(records.RECORD_SCHEMA.names, (rid, b"", 8, 8, 1, [], caption, None)):
                rows[c].append(v)
        records.write_shard(str(root / "records" / f"part-{part}.parquet"), rows)
    return str(root / "records")


def test_a_table_with_keys_or_a_folder_of_text_files_reads_the_same(tmp_path):
    rows = [("k1", "target"), ("k2", "target"), ("k3", "reference"), ("k4", "public")]
    table = read_assignments(_parquet(tmp_path / "a.parquet", "key", rows))
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "target.txt").write_text("k1\n\nk2\n")  # a blank line is no id
    (folder / "reference.txt").write_text("k3")
    (folder / "public.txt").write_text(" k4 \n")
    texts = read_assignments(str(folder))
    assert sorted(zip(*table.to_pydict().values())) == sorted(zip(*texts.to_pydict().values())) == sorted(rows)


def test_each_mistake_in_the_file_is_one_line_or_a_count(tmp_path):
    with pytest.raises(ConfigError, match=r"^splits\.assignments: nothing at .*none\.parquet$"):
        read_assignments(str(tmp_path / "none.parquet"))
    with pytest.raises(DataError, match=r"needs an 'id' \(or 'key'\) column and a 'split' column; it has \['name', 'split'\]"):
        read_assignments(_parquet(tmp_path / "b.parquet", "name", [("a", "target")]))
    (tmp_path / "c.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"is neither a Parquet table .* nor a folder of <split>\.txt files"):
        read_assignments(str(tmp_path / "c.parquet"))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("a\n")
    with pytest.raises(ConfigError, match=r"train\.txt names no split; name each file after its split"):
        read_assignments(str(tmp_path / "lists"))
    with pytest.raises(ConfigError, match=r"^splits\.assignments: unknown split\(s\) \['train'\]"):
        check_assignments(pa.table({"id": ["a"], "split": ["train"]}))
    with pytest.raises(DataError, match=r"^splits\.assignments: 2 id\(s\) in more than one split \(e\.g\. 'a': public "
                                        r"and target\); the splits must be disjoint$"):
        check_assignments(pa.table({"id": ["a", "b", "a", "b", "c"], "split": ["target", "target", "public",
                                                                              "holdout", "target"]}))
    with pytest.raises(DataError, match=r"1 row\(s\) without an id or a split"):
        check_assignments(pa.table({"id": ["a", None], "split": ["target", "target"]}))
    kept, repeated = check_assignments(pa.table({"id": ["a", "a", "b"], "split": ["target", "target", "public"]}))
    assert repeated == 1 and kept.to_pydict() == {"id": ["a", "b"], "split": ["target", "public"]}


def test_the_listed_ids_the_data_lacks_are_counted_and_written(tmp_path):
    data = _records(tmp_path, [f"r{i}" for i in range(50)])
    rng = np.random.default_rng(0)
    splits = ["target", "reference", "public", "holdout"]
    rows = [(f"r{i}", splits[int(rng.integers(4))]) for i in range(0, 50, 2)]  # half the records
    rows += [("gone-1", "target"), ("gone-2", "holdout"), ("gone-3", "holdout"), rows[0]]  # not in the data; a repeat
    out = normalise(_parquet(tmp_path / "a.parquet", "id", rows), records.shard_uris(data),
                    str(tmp_path / "assigned.parquet"), str(tmp_path / "missing.parquet"))
    truth = dict(rows)
    assert out["listed"] == {s: sum(v == s for v in truth.values()) for s in splits}
    assert out["missing"] == {"target": 1, "reference": 0, "public": 0, "holdout": 2} and out["repeated_rows"] == 1
    assert out["missing_examples"] == {"target": ["gone-1"], "holdout": ["gone-2", "gone-3"]}
    assert sorted(pq.read_table(tmp_path / "missing.parquet").column("id").to_pylist()) == ["gone-1", "gone-2", "gone-3"]
    # Every record's split, as the stages' plans look it up, against the file read as a dictionary.
    lookup = Assigned(str(tmp_path / "assigned.parquet"), "v1")
    ids = [f"r{i}" for i in range(50)] + ["gone-1", "elsewhere"]
    assert lookup(pa.array(ids)).tolist() == [truth.get(i, UNASSIGNED) for i in ids]
    # A plan with the given splits keeps its quarantine rule: a VLM target record needs a caption.
    captions = [None if i % 4 == 0 else f"caption {i}" for i in range(50)]
    data = _records(tmp_path / "vlm", [f"r{i}" for i in range(50)], captions)
    plan = SplitPlan({}, 0, {"target": ("caption",)}, ("caption",), assigned=lookup)
    batch = pq.read_table(records.shard_uris(data)[0])
    got = plan.assign(batch).tolist()
    want = [QUARANTINED if truth.get(i) == "target" and c is None else truth.get(i, UNASSIGNED)
            for i, c in zip(batch.column("id").to_pylist(), batch.column("caption").to_pylist())]
    assert got == want and QUARANTINED in got


def test_a_split_the_data_leaves_empty_or_too_small_stops_the_study():
    from study.errors import StudyError
    from study.stages.splits import _check_given

    given = {"uri": "s3://b/splits.parquet", "listed": {"target": 3, "reference": 2, "public": 5},
             "missing": {"target": 3, "reference": 0, "public": 1}}
    counts = {"target": 0, "reference": 2, "public": 4, "holdout": 0, "shared": 0}
    needed = ["target", "reference", "public"]
    with pytest.raises(StudyError, match=r"^split 'target' keeps 0 of the 3 records s3://b/splits\.parquet lists "
                                         r"\(3 not in the data, the rest quarantined: none\); splits\.min_assigned is 1$"):
        _check_given(given, counts, {}, 1, needed)
    with pytest.raises(StudyError, match=r"^split 'public' keeps 4 of the 5 records .*splits\.min_assigned is 5$"):
        _check_given(given, {**counts, "target": 5, "reference": 5}, {}, 5, ["reference", "public"])
    with pytest.raises(StudyError, match=r"^splits\.assignments: lists no public records \(s3://b/splits\.parquet\)"):
        _check_given({**given, "listed": {"target": 3, "reference": 2}}, counts, {}, 1, needed)
    _check_given(given, {**counts, "target": 1}, {}, 1, needed)  # no holdout listed: allowed (no null control)
