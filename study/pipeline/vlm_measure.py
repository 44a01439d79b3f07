"""Stage ``measure`` of the VLM study (DESIGN §2.2): object recovery from a caption.

Per attacked record and model: the objects of its caption's k nearest public images (the union,
and the top-n by neighbour frequency) are scored against the record's objects, all of them and
those its caption does not name. Sides and controls are the frame's (``kinds.CONTROLS``):
positive on each model's own split, null on the holdout. Utility (zero-shot accuracy and
image-to-text retrieval on the holdout) is measured beside memorization.
"""
from __future__ import annotations

import numpy as np

from study import storage
from study.core.objects import (
    ObjectSide,
    PREDICTION_RULES,
    most_memorized,
    named_objects,
    neighbour_votes,
    overlap,
    population_test,
    sample_level,
)
from study.data import records
from study.data.loading import read_split
from study.pipeline.context import RunContext, read_marker
from study.pipeline.kinds import CONTROLS, get_kind, side_ids
from study.pipeline.neighbours import read_results

VARIANTS = ("all", "unnamed")  # ground truth: every object, or those the caption does not name


def object_table(ctx: RunContext, ids: list[str]) -> dict[str, tuple[list[str], str]]:
    """id -> (objects, caption) for the given records."""
    table = records.read_records(ctx.data_root, ids, columns=["id", "objects", "caption"])
    return {i: (o or [], c or "") for i, o, c in zip(*(table.column(n).to_pylist() for n in ("id", "objects", "caption")))}


def _matrix(rows: list[list[str]], vocab: dict[str, int]) -> np.ndarray:
    m = np.zeros((len(rows), len(vocab)), dtype=bool)
    for r, objs in enumerate(rows):
        m[r, [vocab[o] for o in objs if o in vocab]] = True
    return m


def ground_truth(q_ids: list[str], info: dict, variant: str, vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(keep (n,) bool: records with ground truth for this variant, gt (kept, C) bool)."""
    rows = [info[q][0] for q in q_ids]
    if variant == "unnamed":
        rows = [sorted(set(o) - set(named_objects(info[q][1], o))) for q, o in zip(q_ids, rows)]
    keep = np.array([len(g) > 0 for g in rows], dtype=bool)
    return keep, _matrix([g for g, k in zip(rows, keep) if k], vocab)


def record_scores(I: np.ndarray, public_objects: np.ndarray, gt: np.ndarray, k: int, rule: str, top_n: int) -> dict:
    """Per-record hits, precision, recall, F of one model's predictions at one k."""
    votes = neighbour_votes(public_objects, I, min(k, I.shape[1]))
    return overlap(gt, PREDICTION_RULES[rule](votes, top_n))


def run_measure(ctx: RunContext) -> dict:
    cfg, m = ctx.cfg, ctx.cfg.measure
    kind = get_kind(cfg.study)
    pub_ids = list(read_split(ctx.splits_dir, "public")[0])
    attacked = kind.attacked_sets(cfg)
    info = object_table(ctx, pub_ids + [i for s in attacked for i in read_split(ctx.splits_dir, s)[0]])
    vocab = {o: j for j, o in enumerate(sorted({o for objs, _ in info.values() for o in objs}))}
    pub_row = {i: r for r, i in enumerate(pub_ids)}
    public_objects = _matrix([info[i][0] for i in pub_ids], vocab)
    test_args = dict(bootstrap=m.bootstrap, permutations=m.permutations, level=m.confidence_level, seed=m.seed)
    results, skipped = {}, {}
    for space in kind.spaces_for(cfg):
        scores = {}  # (model, split) -> (ids, {(k, rule, variant): overlap dict})
        for split in attacked:
            searched = {model: read_results(ctx.search_results(model, split, space)) for model in kind.models}
            q_ids = next(iter(searched.values()))[0]
            truths = {variant: ground_truth(q_ids, info, variant, vocab) for variant in VARIANTS}  # same for every model
            for variant, (keep, _) in truths.items():
                skipped[f"{split}/{variant}"] = int((~keep).sum())
            for model, (ids, nbrs) in searched.items():
                assert ids == q_ids  # one query order per set, whichever model
                I = np.array([[pub_row[n] if n is not None else -1 for n in row] for row in nbrs], dtype=np.int64)
                per = {}
                for variant, (keep, gt) in truths.items():
                    for k in m.ks:
                        for rule in PREDICTION_RULES:
                            per[(k, rule, variant)] = (np.asarray(q_ids, dtype=object)[keep], record_scores(I[keep], public_objects, gt, k, rule, m.top_n))
                scores[(model, split)] = per
        space_result = {}
        for control, rows in CONTROLS.items():
            if any((t, s) not in scores for _, s, t, _ in rows):
                continue
            entries = {}
            for key in scores[(rows[0][2], rows[0][1])]:
                sides = []
                for side_name, split, tgt, ref in rows:
                    t_ids, t_sc = scores[(tgt, split)][key]
                    _, r_sc = scores[(ref, split)][key]
                    keep_ids = set(side_ids(list(t_ids), control, side_name, cfg.splits.seed))
                    sel = np.array([i in keep_ids for i in t_ids], dtype=bool)
                    sides.append(ObjectSide(
                        ids=t_ids[sel],
                        target_precision=t_sc["precision"][sel], target_recall=t_sc["recall"][sel], target_hits=t_sc["hits"][sel],
                        reference_precision=r_sc["precision"][sel], reference_recall=r_sc["recall"][sel], reference_hits=r_sc["hits"][sel],
                    ))
                k, rule, variant = key
                if sum(len(s) for s in sides) == 0:
                    continue
                entries[f"k={k}/{rule}/{variant}"] = {
                    "k": k, "rule": rule, "variant": variant,
                    **population_test(sides, bins=100, **test_args),
                    "sample_level": sample_level(sides, m.top_fractions),
                    "most_memorized": [
                        {**r, "split": rows[r["side"]][1], "target_model": rows[r["side"]][2], "reference_model": rows[r["side"]][3]}
                        for r in most_memorized(sides, cfg.report.gallery_size)
                    ],
                }
            space_result[control] = entries
            head = entries.get(headline_key(m))
            if head:
                ctx.log("measure", f"{space} {control:<8} k={head['k']} {head['rule']} unnamed objects: PPG {head['ppg']['value']:+.3f} "
                        f"[{head['ppg']['ci'][0]:+.3f}, {head['ppg']['ci'][1]:+.3f}] p={head['ppg']['p_value']:.4f}")
        results[space] = space_result
    utility = measure_utility(ctx)
    ctx.log("measure", "utility: " + ", ".join(f"{k} {v:.3f}" for k, v in utility.items() if isinstance(v, float)))
    storage.write_json(ctx.measure_results, {"spaces": results, "utility": utility, "skipped_no_gt": skipped,
                                             "vocabulary": list(vocab), "headline_key": headline_key(m)})
    return {"spaces": list(results), "utility": utility}


def headline_k(ks) -> int:
    """The k quoted first: 10 when measured (the paper's middle setting), else the smallest."""
    return 10 if 10 in ks else min(ks)


def headline_key(m) -> str:
    """The entry quoted first: headline k, ``measure.headline_rule``, the objects the caption does
    not name (the memorization signal). Top-n is the default rule because with a small object
    vocabulary the union of ten neighbours' objects holds nearly every object for both models."""
    return f"k={headline_k(m.ks)}/{m.headline_rule}/unnamed"


def measure_utility(ctx: RunContext) -> dict:
    """Zero-shot classification and image->text recall@1/@5 of each model on holdout records.

    Zero-shot: each image is classified by its most similar prompt over the object vocabulary
    (``measure.zero_shot_prompt``, else the data's own template); a prediction is right when it
    names one of the image's objects (for one object per image, plain accuracy). Chance is the
    mean share of the vocabulary an image holds, reported beside it.
    """
    import torch

    from study.data.loading import load_images
    from study.train.clip import load_clip, retrieval_recall, tokenize, zero_shot_accuracy

    cfg = ctx.cfg
    if cfg.splits.fractions.get("holdout", 0) <= 0:
        return {"note": "no holdout split: utility not measured"}
    ids, _ = read_split(ctx.splits_dir, "holdout")
    table = object_table(ctx, list(ids))
    ids = [i for i in ids if records.has_text(table[i][1])][: cfg.measure.utility_records]  # retrieval needs the caption
    vocab = sorted({o for i in ids for o in table[i][0]})
    data = (read_marker(ctx.stage_dir("data")) or {}).get("summary", {})
    prompt = cfg.measure.zero_shot_prompt or data.get("prompt") or "a photo of a {}"
    images = load_images(ctx.data_root, ids)
    x = torch.from_numpy(np.ascontiguousarray(np.stack([images[i] for i in ids]).transpose(0, 3, 1, 2)))
    truth = _matrix([table[i][0] for i in ids], {o: j for j, o in enumerate(vocab)})
    with_objects = truth.any(axis=1)
    out: dict = {"records": len(ids)}
    per_model = {}
    for model in get_kind(cfg.study).models:
        clip, tokenizer, _ = load_clip(storage.read_bytes(ctx.model_file(model)))
        entry = {}
        if len(vocab) >= 2 and with_objects.any():
            entry["zero_shot"] = zero_shot_accuracy(clip, tokenizer, x[torch.from_numpy(with_objects)],
                                                    torch.from_numpy(truth[with_objects]), vocab, prompt)
        recall = retrieval_recall(clip, x, tokenize(tokenizer, [table[i][1] for i in ids]), ks=(1, 5))
        entry.update({f"i2t_recall@{k}": v for k, v in recall.items()})
        per_model[model] = entry
    for key in per_model[next(iter(per_model))]:
        out[key] = float(np.mean([e[key] for e in per_model.values()]))
    if "zero_shot" in out:
        out["zero_shot_chance"] = float(truth[with_objects].mean())
        out["zero_shot_prompt"] = prompt
    else:
        out["note"] = "zero-shot classification needs records with objects from at least two classes"
    out["per_model"] = per_model
    return out
