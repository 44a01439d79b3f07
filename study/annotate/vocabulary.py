"""The object vocabulary an annotator reports in: canonical names, and the synonyms that map to them.

Captions and objects are compared on words (``core.objects.named_objects``), so a detector's
"television" and a caption's "tv" must be the same object: every name an annotator may output (a
closed-set detector's category, an open-vocabulary query) is mapped to one canonical name, and
only canonical names reach the objects side table. Names compare lower-cased with runs of
whitespace, '_' and '-' between words made one space ("Traffic_Light" is "traffic light").

Vocabularies: ``coco`` (the 80 COCO categories, as torchvision's COCO detectors name them,
shipped), or a text file at any fsspec URI, one object a line::

    # comments and blank lines are skipped
    tv: television, tv monitor
    dog
    traffic light: traffic signal

The first name of a line is canonical; the names after ':' are its synonyms, each queried too by
an open-vocabulary annotator. A name given twice, or a synonym of two objects, is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from study import storage
from study.errors import ConfigError

_SPACES = re.compile(r"[\s_-]+")


def normalise(name: str) -> str:
    """A name as vocabularies compare it: lower case, words separated by one space."""
    return _SPACES.sub(" ", name.strip().lower()).strip()


@dataclass(frozen=True)
class Vocabulary:
    """Canonical names (in a fixed order: an object's index is its position) and every name an
    annotator may give, mapped to its canonical name's index."""

    names: tuple[str, ...]
    index: dict = field(repr=False)  # normalised name or synonym -> canonical index

    @classmethod
    def build(cls, entries: list[tuple[str, list[str]]], source: str = "the vocabulary") -> "Vocabulary":
        """From (canonical name, [synonyms]) pairs, in order."""
        names, index = [], {}
        for canonical, synonyms in entries:
            c = normalise(canonical)
            if not c:
                raise ConfigError(f"{source}: an empty object name")
            for alias in [c, *(normalise(s) for s in synonyms)]:
                if not alias:
                    raise ConfigError(f"{source}: an empty synonym of '{c}'")
                if alias in index and index[alias] != len(names):
                    raise ConfigError(f"{source}: '{alias}' names both '{names[index[alias]]}' and '{c}'")
                index[alias] = len(names)
            names.append(c)
        if not names:
            raise ConfigError(f"{source} names no object")
        return cls(tuple(names), index)

    def __len__(self) -> int:
        return len(self.names)

    def canonical(self, name: str) -> int | None:
        """The canonical index of an annotator's name (or synonym); None when the vocabulary has
        no such object."""
        return self.index.get(normalise(name))

    def queries(self) -> list[tuple[str, int]]:
        """(text, canonical index) of every name and synonym: what an open-vocabulary annotator is
        asked for; a proposal's best query gives its object."""
        return sorted(self.index.items(), key=lambda kv: (kv[1], kv[0] != self.names[kv[1]], kv[0]))


def coco() -> Vocabulary:
    """The 80 COCO categories in torchvision's order (its detectors' label ids skip the unused
    'N/A' ids of the 91-id COCO scheme; ``annotators`` maps them)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    categories = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    return Vocabulary.build([(c, []) for c in categories if c not in ("__background__", "N/A")], "coco")


def parse(text: str, source: str) -> Vocabulary:
    """A vocabulary file's text (the module's format)."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        canonical, _, rest = line.partition(":")
        entries.append((canonical, [s for s in rest.split(",") if s.strip()] if rest else []))
    return Vocabulary.build(entries, source)


SHIPPED = {"coco": coco}


def load_vocabulary(spec: str) -> Vocabulary:
    """A shipped vocabulary by name (``SHIPPED``) or a vocabulary file at any fsspec URI."""
    if spec in SHIPPED:
        return SHIPPED[spec]()
    try:
        text = storage.read_bytes(spec).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the vocabulary {spec} ({e}); give {' or '.join(SHIPPED)} or a text "
                          "file of one object a line") from None
    return parse(text, f"vocabulary {spec}")
