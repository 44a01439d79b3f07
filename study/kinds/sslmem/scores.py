"""The SSLMem measure stage's per-record work, in Ray tasks (``measure``): each scored set's
scores written to a file of its own, the files joined into ``measure/sslmem_scores.parquet``, and
each space's and score kind's statistics in pieces the driver assembles (no Ray here).

* ``score_set``: both encoders' alignments of one set's records, per space, and their scores, to
  ``measure/scores/<set>.parquet`` (the columns of the joined file);
* ``observed``: per set the size, mean and quantiles, the histogram, the candidates' comparison
  statistics against each control as they are, and (raw scores) the most memorized candidates;
* ``draws``: the bootstrap and permutation draws over one range of draw numbers (keyed by number:
  any split of the ranges gives the same numbers);
* ``assemble``: a space's and score kind's results from the two.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import storage
from study.core import sslmem

SETS = {"target": "candidates", "reference": "independent", "holdout": "extra"}  # split -> the set it plays
CONTROLS = ("independent", "extra")
F, G = "model_a", "model_b"  # f trained on S_S ∪ S_C (target), g on S_S ∪ S_I (reference)
FIELDS = {"align_f": "align_f", "align_g": "align_g", "raw": "score", "normalised": "normalised"}  # column names
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


def set_file(ctx, split: str) -> str:
    return ctx.stage_dir("measure", "scores", f"{SETS[split]}.parquet")


def score_set(ctx, split: str, spaces) -> int:
    """Score one split's records in every space and write them (``set_file``); returns how many."""
    from study.embed.views import view_name

    ids, columns = None, {}
    for space in spaces:
        ids_f, f = read_alignments(ctx.embeddings(F, split, view_name(space)))
        ids_g, g = read_alignments(ctx.embeddings(G, split, view_name(space)))
        if not np.array_equal(ids_f, ids_g) or (ids is not None and not np.array_equal(ids, ids_f)):
            raise RuntimeError(f"{split}/{space}: the encoders or spaces scored different records")  # one pipeline: a bug
        ids = ids_f
        raw, normalised = sslmem.scores(f, g)
        for field, values in (("align_f", f), ("align_g", g), ("raw", raw), ("normalised", normalised)):
            columns[f"{space}/{FIELDS[field]}"] = pa.array(values, pa.float64())
    ids = ids if ids is not None else np.zeros(0, str)
    table = pa.table({"id": pa.array(ids.tolist(), pa.string()), "set": pa.array([SETS[split]] * len(ids), pa.string()),
                      **columns})
    _write(set_file(ctx, split), table)
    return len(ids)


def join_sets(ctx, splits, out_uri: str) -> None:
    """Every scored record's alignments and scores, one row per record (the sets in order)."""
    _write(out_uri, pa.concat_tables([_read(set_file(ctx, split)) for split in splits]))


def _write(uri: str, table: pa.Table) -> None:
    with storage.open_atomic(uri) as fh:
        pq.write_table(table, fh)


def _read(uri: str, columns=None) -> pa.Table:
    with storage.open_read(uri) as fh:
        return pq.read_table(fh, columns=columns)


def _values(ctx, splits, space: str, kind: str) -> dict[str, np.ndarray]:
    """{set: its scores of one kind in one space}, in the order of ``splits`` (``range``: the raw
    scores over the candidates' range, the published normalisation)."""
    column = FIELDS["raw" if kind == "range" else kind]
    values = {SETS[s]: _read(set_file(ctx, s), [f"{space}/{column}"]).column(0).to_numpy() for s in splits}
    return sslmem.range_normalised(values) if kind == "range" else values


def observed(ctx, splits, space: str, kind: str) -> dict:
    """What a space's and score kind's results hold that needs no draw (see the module's doc)."""
    q, values = ctx.cfg.sslmem.high_quantile, _values(ctx, splits, space, kind)
    cand = values.get("candidates", np.zeros(0))
    out = {"sets": {name: sslmem.describe_observed(v) for name, v in values.items()},
           "histogram": sslmem.histogram(values, BINS),
           "tests": {c: sslmem.compare_observed(cand, values[c], q) for c in CONTROLS
                     if len(values.get(c, ())) and len(cand)}}
    if kind == "raw" and "target" in splits:
        # The candidates' ids and raw scores as arrays; Python values for the gallery's rows only.
        fields = ("score", "normalised", "align_f", "align_g")
        table = _read(set_file(ctx, "target"), ["id", *(f"{space}/{f}" for f in fields)])
        ids = table.column("id").to_numpy(zero_copy_only=False)
        top = sslmem.most_memorized(ids, table.column(f"{space}/score").to_numpy(), ctx.cfg.report.gallery_size)
        rows = table.take(pa.array(top, pa.int64())).to_pylist()
        out["most_memorized"] = [{"id": str(r["id"]), **{f: float(r[f"{space}/{f}"]) for f in fields}} for r in rows]
    return out


def draws(ctx, splits, space: str, kind: str, boot: range, swaps: range) -> dict:
    """The draws numbered ``boot`` and ``swaps`` of a space's and score kind's results."""
    m, q, values = ctx.cfg.measure, ctx.cfg.sslmem.high_quantile, _values(ctx, splits, space, kind)
    cand = values.get("candidates", np.zeros(0))
    return {"sets": {name: sslmem.describe_draws(v, boot, m.seed, k) for k, (name, v) in enumerate(values.items())},
            "tests": {c: sslmem.compare_draws(cand, values[c], boot, swaps, m.seed, q) for c in CONTROLS
                      if len(values.get(c, ())) and len(cand)}}


def assemble(seen: dict, pieces: list[dict], level: float, quantile: float) -> dict:
    """A space's and score kind's results from ``observed`` and its draw pieces (in draw order)."""
    join = lambda get: np.concatenate([get(p) for p in pieces])  # noqa: E731
    return {
        "sets": {name: sslmem.describe_summary(obs, join(lambda p: p["sets"][name]), level)
                 for name, obs in seen["sets"].items()},
        "histogram": seen["histogram"],
        "tests": {c: sslmem.compare_summary(obs, join(lambda p: p["tests"][c][0]), join(lambda p: p["tests"][c][1]),
                                            level, quantile) for c, obs in seen["tests"].items()},
    }
