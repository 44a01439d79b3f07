"""The VLM study's utility beside its memorization numbers: each model's zero-shot classification
and image-to-text retrieval on holdout records (docs/concepts/vlm-dejavu.md, utility)."""
from __future__ import annotations

import numpy as np

from study import storage
from study.data import records
from study.data.loading import iter_split
from study.frame.context import RunContext, read_marker
from study.frame.kinds import get_kind
from study.kinds.vlm_dejavu.objects import ObjectTables, object_sets


def utility_rows(tables: ObjectTables, splits_dir: str, limit: int) -> list[tuple[str, list[str], str]]:
    """(id, objects, caption) of the first ``limit`` holdout records in id order that have a
    caption (retrieval needs it); runs in a task, gathering each holdout batch's captions from the
    attacked side's blocks, and returns ``limit`` rows at most."""
    candidates = []
    for batch in iter_split(splits_dir, "holdout"):
        rows, got = tables.attacked.gather(batch.column("id"))
        ids = np.asarray(batch.column("id").to_pylist(), dtype=str)
        ids = ids[[r >= 0 and records.has_text(got.captions[int(r)]) for r in rows]]
        candidates.append(np.sort(ids)[:limit])  # the batch's candidates for the first `limit`
    ids = np.sort(np.concatenate(candidates))[:limit].tolist() if candidates else []
    rows, got = tables.attacked.gather(ids)
    return [(i, [tables.names[j] for j in got.objects.row(int(r))], got.captions[int(r)]) for i, r in zip(ids, rows)]


def measure_utility(ctx: RunContext, rows: list[tuple[str, list[str], str]]) -> dict:
    """Zero-shot classification and image->text recall@1/@5 of each model on holdout records
    (``rows``: ``utility_rows``).

    Zero-shot: each image is classified by its most similar prompt over the object vocabulary
    (``measure.zero_shot_prompt``, else the data's own template); a prediction is right when it
    names one of the image's objects (for one object per image, plain accuracy). Chance is the
    mean share of the vocabulary an image holds, reported beside it.
    """
    import torch

    from study.data.loading import load_inputs
    from study.data.model_input import ModelInput, channels_first
    from study.train.clip import load_clip, retrieval_recall, tokenize, zero_shot_accuracy

    cfg = ctx.cfg
    if not ctx.uses("holdout"):
        return {"note": "no holdout split: utility not measured"}
    ids = [i for i, _, _ in rows]
    table = {i: (objects, caption) for i, objects, caption in rows}
    vocab = sorted({o for i in ids for o in table[i][0]})
    data = (read_marker(ctx.stage_dir("data")) or {}).get("summary", {})
    prompt = cfg.measure.zero_shot_prompt or data.get("prompt") or "a photo of a {}"
    inputs = ModelInput.of(cfg.data)
    images = load_inputs(ctx.data_root, ids, inputs)
    x = torch.from_numpy(channels_first(inputs.stack([images[i] for i in ids])))
    # Dense is fine here: at most measure.utility_records rows over the objects those records show.
    truth = object_sets([table[i][0] for i in ids], {o: j for j, o in enumerate(vocab)}).to_dense()
    with_objects = truth.any(axis=1)
    out: dict = {"records": len(ids)}
    per_model = {}
    for model in get_kind(cfg.study).models_for(cfg):
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
