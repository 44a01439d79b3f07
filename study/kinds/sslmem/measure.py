"""Stage ``measure`` of the SSLMem study: alignments -> per-record scores and population tests.

Reads each model's alignment of every scored record (the embed stage's ``align-<space>`` views),
writes every record's scores to ``measure/sslmem_scores.parquet`` (id, set, per space: align_f,
align_g, score, normalised), and per space and score kind (raw, normalised) the sets'
distributions, the candidates' test against the independent set and the never-trained extra set,
and the most memorized candidates (``measure/results.json``).

The driver holds a few floats per scored record (scalars, not vectors): about 40 bytes per record
and space.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study.report.pvalues import p_is
from study import storage
from study.core import sslmem
from study.frame.context import RunContext

# The split that plays each SSLMem set, and the set's name in the report.
SETS = {"target": "candidates", "reference": "independent", "holdout": "extra"}
CONTROLS = ("independent", "extra")
F, G = "model_a", "model_b"  # f trained on S_S ∪ S_C (target), g on S_S ∪ S_I (reference)
SCORES_FILE = "sslmem_scores.parquet"
BINS = 40


def read_alignments(uri: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,) str sorted, alignments (n,) float64) of one model, set and space."""
    if not storage.exists(uri) or not storage.list_files(uri):
        return np.zeros(0, dtype=str), np.zeros(0)
    fs, paths = storage.arrow_fs_paths(storage.list_files(uri))
    table = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths])
    ids = np.asarray(table.column("id").to_pylist(), dtype=str)
    values = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float64)
    order = np.argsort(ids, kind="stable")
    return ids[order], values[order]


def set_scores(ctx: RunContext, split: str, space: str) -> dict[str, np.ndarray]:
    """Both encoders' alignments and the scores of one split's records, aligned by id."""
    from study.embed.alignment import view_name

    ids_f, f = read_alignments(ctx.embeddings(F, split, view_name(space)))
    ids_g, g = read_alignments(ctx.embeddings(G, split, view_name(space)))
    if not np.array_equal(ids_f, ids_g):  # one pipeline scores both: a bug, not bad input
        raise RuntimeError(f"{split}/{space}: the two encoders scored different records")
    raw, normalised = sslmem.scores(f, g)
    return {"id": ids_f, "align_f": f, "align_g": g, "raw": raw, "normalised": normalised}


def space_results(by_set: dict[str, dict[str, np.ndarray]], ctx: RunContext) -> dict:
    """One space: per score kind, the sets' distributions and the candidates' tests; the most
    memorized candidates by raw score."""
    m, q = ctx.cfg.measure, ctx.cfg.sslmem.high_quantile
    out = {}
    for kind in ("raw", "normalised"):
        values = {name: by_set[name][kind] for name in by_set}
        cand = values.get("candidates", np.zeros(0))
        tests = {
            c: sslmem.compare(cand, values[c], m.bootstrap, m.permutations, m.confidence_level, m.seed, q)
            for c in CONTROLS if len(values.get(c, ())) and len(cand)
        }
        out[kind] = {
            "sets": {name: sslmem.describe(v, m.bootstrap, m.confidence_level, m.seed, k)
                     for k, (name, v) in enumerate(values.items())},
            "histogram": sslmem.histogram(values, BINS),
            "tests": tests,
        }
    cand = by_set.get("candidates")
    top = sslmem.most_memorized(cand["id"], cand["raw"], ctx.cfg.report.gallery_size) if cand is not None else []
    out["most_memorized"] = [
        {"id": str(cand["id"][p]), "score": float(cand["raw"][p]), "normalised": float(cand["normalised"][p]),
         "align_f": float(cand["align_f"][p]), "align_g": float(cand["align_g"][p])} for p in top
    ]
    return out


def write_scores(ctx: RunContext, per_space: dict[str, dict[str, dict[str, np.ndarray]]]) -> None:
    """Every scored record's alignments and scores, one row per record, columns per space."""
    names = [name for name in SETS.values() if any(name in s for s in per_space.values())]
    first = next(iter(per_space.values()))
    columns: dict[str, pa.Array] = {
        "id": pa.array(np.concatenate([first[n]["id"] for n in names]).tolist(), pa.string()),
        "set": pa.array([n for n in names for _ in range(len(first[n]["id"]))], pa.string()),
    }
    for space, by_set in per_space.items():
        for field in ("align_f", "align_g", "raw", "normalised"):
            label = "score" if field == "raw" else field
            columns[f"{space}/{label}"] = pa.array(np.concatenate([by_set[n][field] for n in names]), pa.float64())
    uri = ctx.stage_dir("measure", SCORES_FILE)
    storage.makedirs(ctx.stage_dir("measure"))
    fs, (path,) = storage.arrow_fs_paths([uri])
    pq.write_table(pa.table(columns), path, filesystem=fs)


def run_measure(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    scored = [s for s in SETS if cfg.splits.uses(s)]
    per_space, results = {}, {}
    for space in cfg.sslmem.spaces():
        by_set = {SETS[s]: set_scores(ctx, s, space) for s in scored}
        empty = [n for n in by_set if not len(by_set[n]["id"])]
        if empty:
            ctx.log("measure", f"{space}: no scored records in {', '.join(empty)}")
        per_space[space] = by_set
        results[space] = space_results(by_set, ctx)
        for control, t in results[space]["raw"]["tests"].items():
            d = t["mean_difference"]
            ctx.log("measure", f"{space:<9} candidates - {control}: mean score {d['value']:+.4f} "
                    f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] {p_is(d, sep='=')}, AUC {t['auc']['value']:.3f}, "
                    f"highly memorized {t['high_share']['value']:.1%} (expected {t['high_share']['expected']:.0%})")
    write_scores(ctx, per_space)
    storage.write_json(ctx.measure_results, results)
    return {"spaces": list(results), "scored": {n: int(len(v["id"])) for n, v in next(iter(per_space.values())).items()}}
