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
