"""The measure stage's per-record tables in blocks of id ranges (``study.stages.id_tables``): the
VLM object tables (``kinds.vlm_dejavu.objects``) and the SSL label tables, built by Ray tasks from
record shards and split members written as the stages write them. What a batch of ids gathers
equals a dictionary built from the same rows, whatever the block size, and the outcome files
scored from many blocks equal those scored from one."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.data.loading import split_uri
from study.data.records import write_shard
from study.kinds.ssl_dejavu import outcomes as ssl_outcomes
from study.kinds.vlm_dejavu import outcomes
from study.kinds.vlm_dejavu.objects import object_tables
from study.search.results import ResultWriter

SPLITS = {"public": 230, "target": 41, "reference": 37, "holdout": 29}
ATTACKED = ("target", "reference", "holdout")
CLASSES = 4
NAMES = [f"thing{j}" for j in range(30)] + ["ça", "Zebra", "a b"]


def _make(root) -> dict:
    """Record shards and split members; returns {id: (object names, caption)} of the records the
    data holds (a split member missing from the data has none), the splits' ids and {id: label}
    of the members (-1: none)."""
    rng = np.random.default_rng(3)
    ids = {s: [f"{s[0]}{'x' * int(rng.integers(0, 3))}{i}" for i in rng.permutation(n)] for s, n in SPLITS.items()}
    ids["public"][:3] = ["P-é1", "P-é2", "p"]  # ids outside ASCII and of every length
    everyone = [i for s in SPLITS for i in ids[s]] + [f"other{i}" for i in range(15)]  # records in no split
    missing = set(rng.choice(everyone, 12, replace=False))  # members the data lacks
    truth = {}
    rows = {"id": [], "image": [], "width": [], "height": [], "label": [], "boxes": [], "caption": [], "objects": []}
    for i in rng.permutation(everyone):
        if i in missing:
            continue
        objs = None if rng.random() < 0.1 else [str(o) for o in rng.choice(NAMES, int(rng.integers(0, 5)))]
        if objs is not None and rng.random() < 0.2:
            objs.append(None)  # a null name in the list is no object
        caption = None if rng.random() < 0.1 else " ".join(rng.choice(NAMES, 2))
        truth[i] = ({o for o in objs or [] if o is not None}, caption or "")
        for name, value in (("id", i), ("image", b""), ("width", 1), ("height", 1), ("label", None), ("boxes", None),
                            ("caption", caption), ("objects", objs)):
            rows[name].append(value)
    os.makedirs(root / "data")
    for j in range(4):  # shards in no id order
        write_shard(str(root / "data" / f"shard-{j}.parquet"), {k: v[j::4] for k, v in rows.items()})
    labels = {}
    for split, members in ids.items():
        os.makedirs(split_uri(str(root / "splits"), split))
        for j in range(3):
            got = [None if rng.random() < 0.1 else int(rng.integers(0, CLASSES)) for _ in members[j::3]]
            labels.update({i: -1 if y is None else y for i, y in zip(members[j::3], got)})
            pq.write_table(pa.table({"id": pa.array(members[j::3]), "label": pa.array(got, pa.int64())}),
                           os.path.join(split_uri(str(root / "splits"), split), f"part-{j}.parquet"))
    return {"truth": truth, "ids": ids, "labels": labels}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-tables")
    return root, _make(root)


def _check_gather(tables, side, asked, truth, members, captions: bool):
    rows, got = side.gather(pa.array(asked, pa.string()))
    for i, r in zip(asked, rows):
        if i is None or i not in members:
            assert r == -1, i
            continue
        assert r >= 0, i
        names, caption = truth.get(i, (set(), ""))
        assert {tables.names[o] for o in got.objects.row(int(r))} == names, i
        if captions:
            assert got.captions[int(r)] == caption, i


@pytest.mark.parametrize("per_block", [10**9, 60, 7])
def test_gathered_records_equal_a_dictionary_whatever_the_block_size(ray_local, data, per_block):
    root, made = data
    truth, ids = made["truth"], made["ids"]
    tables = object_tables(str(root / "data"), str(root / "splits"), ATTACKED, per_block)
    att_ids = [i for s in ATTACKED for i in ids[s]]
    n = {"public": SPLITS["public"], "attacked": len(att_ids)}
    for name, side in (("public", tables.public), ("attacked", tables.attacked)):
        want = 1 if per_block >= n[name] else -(-n[name] // per_block)
        assert 1 < len(side.parts) <= want if want > 1 else len(side.parts) == 1  # sampled bounds may merge a range
    used = ids["public"] + att_ids
    assert tables.names == sorted(set().union(*(truth[i][0] for i in used if i in truth)))
    rng = np.random.default_rng(per_block % 1000)
    for name, side, members in (("public", tables.public, set(ids["public"])), ("attacked", tables.attacked, set(att_ids))):
        pool = list(members) + ["nobody", "other1", ids["target"][0] if name == "public" else ids["public"][0]]
        asked = [str(x) for x in rng.choice(pool, 400)] + [None, "P-é1", "P-é1"]  # repeats, a null
        _check_gather(tables, side, asked, truth, members, captions=name == "attacked")
        _check_gather(tables, side, [], truth, members, captions=name == "attacked")


def _results(uri: str, ids: dict, queries: list, K: int) -> None:
    rng = np.random.default_rng(8)
    neighbours = np.array([[str(p) if rng.random() > 0.05 else None for p in rng.choice(ids["public"], K)]
                           for _ in queries], dtype=object)
    writer = ResultWriter(uri, "key", rows_per_part=25)
    writer.write(np.array(queries), neighbours, rng.random((len(queries), K)).astype(np.float32))
    writer.close()


@pytest.mark.parametrize("per_block", [10**9, 50, 9])
def test_gathered_labels_equal_a_dictionary_whatever_the_block_size(ray_local, data, per_block):
    root, made = data
    ids, labels = made["ids"], made["labels"]
    tables = ssl_outcomes.label_tables(str(root / "splits"), ATTACKED, CLASSES, per_block)
    assert (len(tables.public.parts) > 1) == (per_block < SPLITS["public"])
    rng = np.random.default_rng(per_block % 1000)
    for split, side in (("public", tables.public), *tables.attacked.items()):
        asked = [str(x) for x in rng.choice(ids[split] + ["nobody", ids["public" if split != "public" else "target"][0]], 300)]
        rows, got = side.gather(pa.array(asked + [None]))
        want = [labels[i] if i in set(ids[split]) else None for i in asked] + [None]
        assert [None if r < 0 else int(got.values[r]) for r in rows] == want


def test_ssl_outcomes_from_many_blocks_equal_those_from_one(ray_local, data, tmp_path):
    root, made = data
    _results(str(tmp_path / "results"), made["ids"], made["ids"]["target"], 6)
    files = {}
    for per_block in (10**9, 9):
        tables = ssl_outcomes.label_tables(str(root / "splits"), ATTACKED, CLASSES, per_block)
        out = tmp_path / f"out-{per_block}"
        counts = [ssl_outcomes.score_part(tables, str(tmp_path / "results"), part, str(out), "target")
                  for part in range(2)]
        files[per_block] = (counts, {f: pq.read_table(out / f) for f in sorted(os.listdir(out))})
    (c1, one), (c2, many) = files.values()
    assert c1 == c2 and sum(c["unlabelled_neighbours"] for c in c1) > 0
    assert one.keys() == many.keys() and len(one) == 2
    assert all(one[f].equals(many[f]) and one[f].num_rows for f in one)


def test_outcomes_from_many_blocks_equal_those_from_one(ray_local, data, tmp_path):
    root, made = data
    ids = made["ids"]
    queries = ids["target"] + ids["holdout"]
    K = 6
    _results(str(tmp_path / "results"), ids, queries, K)
    files = {}
    for per_block in (10**9, 9):
        tables = object_tables(str(root / "data"), str(root / "splits"), ATTACKED, per_block)
        assert (len(tables.public.parts) > 1) == (per_block == 9)
        out = tmp_path / f"out-{per_block}"
        for part in range(-(-len(queries) // 25)):
            outcomes.score_part(tables, str(tmp_path / "results"), part, str(out), (1, 3, K), 2)
        files[per_block] = {f: pq.read_table(out / f) for f in sorted(os.listdir(out))}
    one, many = files.values()
    assert one.keys() == many.keys() and len(one) == 3
    for f in one:
        assert one[f].equals(many[f]), f
        assert one[f].num_rows and sum(one[f].column(c).to_numpy().sum() for c in one[f].column_names
                                      if c.endswith("/hits")) > 0  # something was scored
