"""Tags of what each record's attacked crop shows, for the one-model SSL test's naive-Bayes
predictor (its ``crop_tags`` tagger): the annotator run on the crop the embed stage cuts (the same
rule, ``embed.crop``, on the same boxes and label), with the foreground masked out of what it may
report: the record's own label's object is never among its tags, so the predictor cannot read the
label it is asked to predict. A record without a label or a crop has none (null)."""
from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa

from study.annotate.vocabulary import Vocabulary
from study.data.records import iter_boxes
from study.embed.views import crop_for

COLUMN = "crop_tags"
TYPE = pa.list_(pa.string())


def foreground_of(vocabulary: Vocabulary, replaced: bool, label_names: Sequence[str]) -> Callable[[int | None], str | None]:
    """A record's label -> the vocabulary's name of its object (None: not one the vocabulary
    names, so no tag can be it). Labels are vocabulary indices where the annotator labelled the
    records, else the input's own (``label_names``, from the data stage)."""
    def name(label: int | None) -> str | None:
        if label is None or label < 0:
            return None
        if replaced:
            return vocabulary.names[label]
        at = vocabulary.canonical(label_names[label]) if label < len(label_names) else None
        return None if at is None else vocabulary.names[at]

    return name


def crop_tags(annotator, images: list, table: pa.Table, vocabulary: Vocabulary, crop_cfg,
              foreground: Callable[[int | None], str | None]) -> pa.Array:
    """Per record of ``table`` (its images decoded in ``images``), its crop's tags, sorted."""
    labels = table.column("label").to_pylist()
    rects = [crop_for(w, h, boxes, label, crop_cfg)[0] for w, h, boxes, label in
             zip(table.column("width").to_pylist(), table.column("height").to_pylist(),
                 iter_boxes(table.column("boxes")), labels)]
    found = iter(annotator([im.crop(r) for im, r in zip(images, rects) if r is not None]))
    out = []
    for rect, label in zip(rects, labels):
        if rect is None:
            out.append(None)
            continue
        shown = {vocabulary.names[o] for o in next(found).objects}
        out.append(sorted(shown - {foreground(label)}))
    return pa.array(out, TYPE)
