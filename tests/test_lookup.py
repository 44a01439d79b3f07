"""IdIndex answers like a dictionary of ids to rows (the oracle), on seeded ids."""
from __future__ import annotations

import numpy as np

from study.data.lookup import IdIndex


def test_rows_equal_a_dictionary():
    rng = np.random.default_rng(0)
    ids = [f"r{v}" for v in rng.choice(10**6, size=3000, replace=False)]
    index = IdIndex([ids[:1000], ids[1000:2500], ids[2500:]])
    oracle = {i: r for r, i in enumerate(ids)}
    queries = [ids[j] for j in rng.integers(0, 3000, 500)] + ["missing", "r", "zzz", None, "é-unicode"]
    assert index.rows(queries).tolist() == [oracle.get(q, -1) for q in queries]
    assert len(index) == 3000
    assert IdIndex([]).rows(["a"]).tolist() == [-1]


def test_arrow_ids_answer_like_python_ids():
    """Ids given as Arrow string arrays (sliced, chunked, with nulls, of mixed widths and UTF-8)
    index and look up as the same ids given as Python strings."""
    import pyarrow as pa

    rng = np.random.default_rng(1)
    ids = [f"r{v}" for v in rng.choice(10**6, size=2000, replace=False)] + ["é-unicode", "a", "x" * 40]
    arrow = pa.array(["pad"] + ids).slice(1)  # an offset into its buffers
    chunked = pa.chunked_array([ids[:700], ids[700:]])
    oracle = {i: r for r, i in enumerate(ids)}
    queries = [ids[j] for j in rng.integers(0, len(ids), 500)] + ["missing", "r", "é", None, "x" * 41, ""]
    want = [oracle.get(q, -1) for q in queries]
    for index in (IdIndex([arrow]), IdIndex([chunked]), IdIndex([ids[:1000], pa.array(ids[1000:])])):
        assert index.rows(pa.array(queries)).tolist() == want
        assert index.rows(pa.chunked_array([queries[:3], queries[3:]])).tolist() == want
        assert index.rows(queries).tolist() == want
    assert IdIndex([pa.array([], pa.string())]).rows(pa.array(["a"])).tolist() == [-1]
    assert IdIndex([ids]).rows(pa.array([], pa.string())).tolist() == []


def test_blocks_gather_what_a_dictionary_holds():
    """A side in blocks of id ranges (``id_tables.Blocks``, in memory): a batch of ids (repeats,
    nulls, unknown ids, UTF-8, ids on a block's bounds) gathers each id's record from the block its
    range names, equal to a dictionary over every record, however the side is cut."""
    import pyarrow as pa

    from study.kinds.ssl_dejavu.outcomes import LabelBlock
    from study.stages.id_tables import Blocks

    rng = np.random.default_rng(2)
    ids = [f"r{v}" for v in rng.choice(10**5, size=600, replace=False)] + ["é-unicode", "a", "x" * 30]
    labels = {i: int(rng.integers(0, 9)) for i in ids}
    ordered = sorted(ids)
    queries = [ids[j] for j in rng.integers(0, len(ids), 400)] + ["missing", "r", None, "", "zzz", ordered[0], ordered[-1]]
    for cuts in ([], [ordered[300]], [ordered[1], ordered[2], ordered[400]], ["m"]):  # "m": a bound no id equals
        edges = [None, *cuts, None]
        bounds = list(zip(edges[:-1], edges[1:]))
        parts = []
        for lo, hi in bounds:
            mine = [i for i in rng.permutation(ids) if (lo is None or i >= lo) and (hi is None or i < hi)]
            parts.append(LabelBlock(IdIndex([mine]), np.array([labels[i] for i in mine], np.int64)))
        blocks = Blocks(tuple(bounds), tuple(parts), (None,) * len(parts))
        for asked in (queries, pa.array(queries)):
            rows, got = blocks.gather(asked)
            assert [None if r < 0 else int(got.values[r]) for r in rows] == [labels.get(q) for q in queries]
        assert blocks.gather([])[0].tolist() == []
