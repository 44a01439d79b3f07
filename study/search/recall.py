"""Recall of an approximate index against exact search, on a seeded sample of the queries, and
the nprobe that reaches a target recall.

The sample is spread evenly over the query sets (``search.recall_queries`` in all) and read by
row, so the driver holds only the sample. The exact neighbours come from the shards, each
streaming its slice of the public set from storage (the IVF-PQ shards hold only codes).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from study.core.ivf_params import nprobe_ladder, pick_nprobe, recall_at_k
from study.core.topk import l2_normalize
from study.search import layout
from study.search.shards import ShardedIndex

RECALL_AT = (10,)  # reported besides recall at the search's own k


def sample_queries(sets: Mapping[str, layout.EmbeddingSet], total: int, seed: int,
                   normalize: bool) -> dict[str, np.ndarray]:
    """Per query set, the vectors of a seeded sample of its rows (``total`` split evenly)."""
    out = {}
    per_set = -(-total // max(1, len(sets)))
    for i, (name, es) in enumerate(sets.items()):
        rows = np.sort(np.random.default_rng([seed, i]).choice(es.n, size=min(per_set, es.n), replace=False))
        xq = layout.read_rows(es, rows)
        out[name] = l2_normalize(xq) if normalize else xq
    return out


def measure_recall(index: ShardedIndex, samples: Mapping[str, np.ndarray], k: int, nlist: int,
                   nprobe: int, target: float, log: Callable[[str], None]) -> tuple[int, dict]:
    """(nprobe to search with, recall summary). ``nprobe`` > 0 is kept; 0 walks the ladder of
    powers of two until the sample's mean recall@k reaches ``target``."""
    names = [s for s in samples if len(samples[s])]
    if not names:
        return nprobe or nlist, {"queries": 0}
    xq = np.concatenate([samples[s] for s in names])
    k = min(k, index.nb)
    _, I_exact = index.exact(xq, k)
    tried, results = {}, {}
    for p in [nprobe] if nprobe else nprobe_ladder(nlist):
        _, I, _ = index.search(xq, k, p)
        results[p] = I
        tried[p] = float(recall_at_k(I, I_exact, k).mean())
        log(f"recall@{k} {tried[p]:.4f} at nprobe {p} on {len(xq)} sample queries")
        if not nprobe and tried[p] >= target:
            break
    chosen = nprobe or pick_nprobe(tried, target)
    I, bounds = results[chosen], np.cumsum([0] + [len(samples[s]) for s in names])
    at = sorted({k, *(r for r in RECALL_AT if r < k)})
    per_set = {
        s: {f"recall@{r}": round(float(recall_at_k(I[a:b], I_exact[a:b], r).mean()), 4) for r in at} | {"queries": int(b - a)}
        for s, a, b in zip(names, bounds[:-1], bounds[1:])
    }
    overall = {f"recall@{r}": round(float(recall_at_k(I, I_exact, r).mean()), 4) for r in at}
    return chosen, {"nprobe": chosen, "target": target, "queries": len(xq), **overall,
                    "tried": {str(p): round(r, 4) for p, r in tried.items()}, "per_set": per_set}
