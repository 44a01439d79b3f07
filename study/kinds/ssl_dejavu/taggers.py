"""Taggers for the one-model test's naive-Bayes predictor, picked by name from ``TAGGERS``: what a
record's attacked crop shows, as words, from the record alone. A tagger must not see the crop's
foreground (the label it is asked to predict).

``synthetic_background``: the built-in generator writes its background into the caption ("the
digit 3 on a dark blue and light orange checked background with narrow straight stripes"); the
words after "on a" are the crop's tags (colours, pattern, stripe width and direction).

``crop_tags``: what an annotator found in the crop itself (``annotate.crop_tags``: the annotate stage
runs it on each record's attacked crop, the foreground's object masked out of its tags).
"""
from __future__ import annotations

from typing import Callable

STOP = frozenset({"and", "with", "background", "a"})


def synthetic_background(caption: str | None) -> list[str]:
    if not caption:
        return []
    if " on a " in caption:
        text = caption.split(" on a ", 1)[1]
    elif caption.startswith("a "):  # an image without a named object: "a <background>"
        text = caption[2:]
    else:
        return []
    return [w for w in text.split() if w not in STOP]


def crop_tags(tags: list[str] | None) -> list[str]:
    return list(tags or [])


TAGGERS: dict[str, Callable] = {"synthetic_background": synthetic_background, "crop_tags": crop_tags}
COLUMNS = {"synthetic_background": "caption", "crop_tags": "crop_tags"}  # the record column each tagger reads
